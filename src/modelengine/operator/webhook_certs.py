"""The injection webhook's TLS: a serving certificate in a Secret, the caBundle kept in sync.

Two sources, one reader. With cert-manager (`managed=False`) an Issuer + Certificate in
the chart write the Secret and cert-manager's CA injector fills the webhook
configuration's `caBundle`; the operator only reads the Secret. Without it (`managed=True`)
the operator is its own small CA: a self-signed CA and a serving certificate for the
webhook Service's DNS names, stored in the same Secret layout cert-manager uses
(`kubernetes.io/tls`: `tls.crt`, `tls.key`, `ca.crt`), and the
MutatingWebhookConfiguration's `caBundle` patched to `ca.crt`.

Rotation without a window where the API server distrusts a replica: the serving
certificate (90 days) is reissued by the same CA once less than a third of its life is
left, so `caBundle` does not change; the CA (5 years) is replaced when less than a year is
left, and `ca.crt` then holds the new CA *and* the old one until it expires, so replicas
still serving the old certificate stay trusted. Every replica serves what the Secret
holds (all of them sit behind the Service); two replicas rotating at once are ordered by
the Secret's resourceVersion (a patch carrying a stale one answers 409, and the loser
re-reads the winner's certificate).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelengine.errors import InfrastructureError
from modelengine.operator.kube import ApiError, api_message

log = logging.getLogger("modelengine.operator.webhook")

CA_LIFETIME = datetime.timedelta(days=5 * 365)
CA_RENEW_BEFORE = datetime.timedelta(days=365)
CERT_LIFETIME = datetime.timedelta(days=90)
CERT_RENEW_BEFORE = CERT_LIFETIME / 3
_BACKDATE = datetime.timedelta(minutes=5)  # clock skew between nodes


class CertApi(Protocol):
    """The API calls the certificate code needs (a Secret, the webhook configuration)."""

    async def read_secret_object(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> None: ...

    async def patch_secret(self, namespace: str, name: str, body: dict[str, Any]) -> None: ...

    async def read_webhook_configuration(self, name: str) -> dict[str, Any] | None: ...

    async def patch_webhook_configuration(self, name: str, body: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ServingCert:
    """What the webhook serves: its certificate and key, and the CA bundle that trusts it."""

    ca_pem: bytes  # one or two CA certificates (two while a CA rotation settles)
    cert_pem: bytes
    key_pem: bytes

    @property
    def not_after(self) -> datetime.datetime:
        return x509.load_pem_x509_certificate(self.cert_pem).not_valid_after_utc

    def dns_names(self) -> set[str]:
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        try:
            alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return set()
        return set(alt.get_values_for_type(x509.DNSName))

    def load_into(self, context: ssl.SSLContext) -> None:
        """Put the certificate into `context`; new handshakes use it (ssl reads only files)."""
        with tempfile.TemporaryDirectory(prefix="modelengine-webhook-") as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            key.touch(mode=0o600)
            key.write_bytes(self.key_pem)
            cert.write_bytes(self.cert_pem)
            context.load_cert_chain(cert, key)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.load_into(context)
        return context

    def secret_data(self) -> dict[str, str]:
        return {
            "tls.crt": base64.b64encode(self.cert_pem).decode(),
            "tls.key": base64.b64encode(self.key_pem).decode(),
            "ca.crt": base64.b64encode(self.ca_pem).decode(),
        }

    @classmethod
    def from_secret(cls, secret: dict[str, Any]) -> ServingCert | None:
        """The certificate a Secret holds; None when it holds none (or something unreadable)."""
        data = secret.get("data") or {}
        try:
            cert = cls(
                ca_pem=base64.b64decode(data["ca.crt"]),
                cert_pem=base64.b64decode(data["tls.crt"]),
                key_pem=base64.b64decode(data["tls.key"]),
            )
            cert.not_after  # noqa: B018 - parses the certificate
        except (KeyError, ValueError, TypeError):
            return None
        return cert


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use for the webhook Service."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(now: datetime.datetime, lifetime: datetime.timedelta = CA_LIFETIME) -> tuple[bytes, bytes]:
    """A new self-signed CA: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("modelengine-webhook-ca"))
        .issuer_name(_name("modelengine-webhook-ca"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def issue(
    *,
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    dns_names: list[str],
    now: datetime.datetime,
    lifetime: datetime.timedelta = CERT_LIFETIME,
) -> tuple[bytes, bytes]:
    """A serving certificate for `dns_names` signed by the CA: (certificate PEM, key PEM)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the webhook CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _valid_cas(bundle: bytes, now: datetime.datetime) -> list[x509.Certificate]:
    try:
        cas = x509.load_pem_x509_certificates(bundle)
    except ValueError:
        return []
    return [c for c in cas if c.not_valid_after_utc > now]


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class WebhookCerts:
    """Reads (and, when `managed`, creates and rotates) the webhook's certificate."""

    CA_KEY = "ca.key"  # only in the operator's own Secret: the key it signs with

    def __init__(
        self,
        *,
        api: CertApi,
        namespace: str,
        secret: str,
        dns_names: list[str],
        webhook_configuration: str | None,
        managed: bool,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.secret = secret
        self.dns_names = dns_names
        self.webhook_configuration = webhook_configuration
        self.managed = managed
        self.clock = clock

    async def ensure(self) -> ServingCert:
        """The certificate to serve now, issuing or rotating it first when ours to manage."""
        for _ in range(3):
            secret = await self.api.read_secret_object(self.namespace, self.secret)
            current = ServingCert.from_secret(secret) if secret is not None else None
            if not self.managed:
                if current is None:
                    raise InfrastructureError(
                        f"webhook Secret {self.namespace}/{self.secret} holds no certificate yet "
                        "(cert-manager has not issued it: check the Certificate's status)"
                    )
                return current
            if current is not None and not self._needs_renewal(current, secret or {}):
                await self._sync_or_log(current.ca_pem)
                return current
            fresh, data = self._renew(current, secret)
            try:
                await self._write(secret, data)
            except ApiError as err:
                if err.status == 409:  # another replica rotated first: serve what it wrote
                    continue
                raise
            log.info(
                "webhook certificate issued for %s (valid until %s)",
                self.dns_names[0],
                fresh.not_after.isoformat(timespec="seconds"),
            )
            await self._sync_or_log(fresh.ca_pem)
            return fresh
        raise InfrastructureError(
            f"webhook Secret {self.namespace}/{self.secret}: kept changing while being rotated (409 three times)"
        )

    def _needs_renewal(self, cert: ServingCert, secret: dict[str, Any]) -> bool:
        now = self.clock()
        if cert.not_after - now < CERT_RENEW_BEFORE:
            return True
        if not set(self.dns_names) <= cert.dns_names():
            return True
        if self.CA_KEY not in (secret.get("data") or {}):
            return True
        cas = _valid_cas(cert.ca_pem, now)
        return not cas or cas[0].not_valid_after_utc - now < CA_RENEW_BEFORE

    def _renew(
        self, current: ServingCert | None, secret: dict[str, Any] | None
    ) -> tuple[ServingCert, dict[str, str]]:
        """A new serving certificate; a new CA too when the current one is missing or ageing."""
        now = self.clock()
        data = (secret or {}).get("data") or {}
        old_cas = _valid_cas(current.ca_pem, now) if current is not None else []
        try:
            ca_key = base64.b64decode(data[self.CA_KEY])
        except (KeyError, ValueError):
            ca_key = b""
        if old_cas and ca_key and old_cas[0].not_valid_after_utc - now >= CA_RENEW_BEFORE:
            ca_cert = old_cas[0].public_bytes(serialization.Encoding.PEM)
            bundle = _pem(old_cas)
        else:
            ca_cert, ca_key = make_ca(now)
            # The old CA stays trusted until it expires: replicas may still serve its certificate.
            bundle = ca_cert + _pem(old_cas[:1])
        cert_pem, key_pem = issue(ca_cert_pem=ca_cert, ca_key_pem=ca_key, dns_names=self.dns_names, now=now)
        fresh = ServingCert(ca_pem=bundle, cert_pem=cert_pem, key_pem=key_pem)
        return fresh, {**fresh.secret_data(), self.CA_KEY: base64.b64encode(ca_key).decode()}

    async def _write(self, secret: dict[str, Any] | None, data: dict[str, str]) -> None:
        if secret is None:
            await self.api.create_secret(
                self.namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "kubernetes.io/tls",
                    "metadata": {
                        "name": self.secret,
                        "namespace": self.namespace,
                        "labels": {"app.kubernetes.io/managed-by": "modelengine-operator"},
                    },
                    "data": data,
                },
            )
            return
        version = (secret.get("metadata") or {}).get("resourceVersion")
        await self.api.patch_secret(
            self.namespace,
            self.secret,
            {"metadata": {"resourceVersion": version} if version else {}, "data": data},
        )

    async def _sync_or_log(self, ca_pem: bytes) -> None:
        """A caBundle that cannot be written (RBAC, a 409) must not stop the serving: the
        next refresh tries again, and a configuration already trusting this CA keeps working."""
        try:
            await self.sync_ca_bundle(ca_pem)
        except ApiError as err:
            log.error(
                "caBundle of MutatingWebhookConfiguration %s not updated: %s", self.webhook_configuration, err
            )

    async def sync_ca_bundle(self, ca_pem: bytes) -> bool:
        """Patch every webhook's `caBundle` to `ca_pem`; True when something changed."""
        if self.webhook_configuration is None:
            return False
        config = await self.api.read_webhook_configuration(self.webhook_configuration)
        if config is None:
            log.debug(
                "MutatingWebhookConfiguration %s not found: no caBundle to sync", self.webhook_configuration
            )
            return False
        bundle = base64.b64encode(ca_pem).decode()
        webhooks = config.get("webhooks") or []
        if all((w.get("clientConfig") or {}).get("caBundle") == bundle for w in webhooks):
            return False
        for webhook in webhooks:
            webhook.setdefault("clientConfig", {})["caBundle"] = bundle
        # A merge patch replaces the whole list; the resourceVersion makes a concurrent edit a 409.
        version = (config.get("metadata") or {}).get("resourceVersion")
        await self.api.patch_webhook_configuration(
            self.webhook_configuration,
            {"metadata": {"resourceVersion": version} if version else {}, "webhooks": webhooks},
        )
        log.info("caBundle of MutatingWebhookConfiguration %s updated", self.webhook_configuration)
        return True


class ClientCertApi:
    """`CertApi` over the official client, from the operator's client configuration."""

    def __init__(self, configuration: Any) -> None:
        from kubernetes import client

        self._api = client.ApiClient(configuration)
        self._core = client.CoreV1Api(self._api)
        self._admission = client.AdmissionregistrationV1Api(self._api)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        def call() -> dict[str, Any] | None:
            try:
                response = fn(*args, _preload_content=False, **kwargs)
            except ApiException as err:
                if err.status == 404 and fn.__name__.startswith("read_"):
                    return None
                raise ApiError(err.status or 0, api_message(err)) from None
            try:
                raw = response.data
            finally:
                response.release_conn()
            out: dict[str, Any] = json.loads(raw) if raw else {}
            return out

        return await asyncio.to_thread(call)

    async def read_secret_object(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(self._core.read_namespaced_secret, name, namespace)

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> None:
        await self._call(self._core.create_namespaced_secret, namespace, body)

    async def patch_secret(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        await self._call(
            self._core.patch_namespaced_secret,
            name,
            namespace,
            body,
            _content_type="application/merge-patch+json",
        )

    async def read_webhook_configuration(self, name: str) -> dict[str, Any] | None:
        return await self._call(self._admission.read_mutating_webhook_configuration, name)

    async def patch_webhook_configuration(self, name: str, body: dict[str, Any]) -> None:
        await self._call(
            self._admission.patch_mutating_webhook_configuration,
            name,
            body,
            _content_type="application/merge-patch+json",
        )

    def close(self) -> None:
        self._api.close()
