"""RBAC for the fake API server, decided as a real server's RBAC authorizer decides.

A real API server turns each request into attributes (user, verb, API group, resource,
subresource, namespace, name; or a non-resource path) and allows it when some rule of some
role bound to the user covers them. This module does the same, so tests can run the
operator with exactly the permissions a rendered Helm chart grants and see a `403
Forbidden` where a cluster would answer one:

- `request_attributes` is apiserver's `RequestInfoFactory`: the verb comes from the method
  (GET of a name → get, of a collection → list, or watch when `watch` is set as a real
  server reads the flag; POST → create, PUT → update, PATCH → patch, DELETE of a name →
  delete, of a collection → deletecollection); `/api/v1/...` is the core group, `/apis/G/V/...`
  group G; `namespaces/NS/` scopes a request; the part after the name is the subresource
  (`status`, `proxy`, `log`: `GET .../pods/NAME:PORT/proxy/PATH` is `get` of `pods/proxy`
  named `NAME:PORT`); `fieldSelector=metadata.name=N` names a list or watch; paths
  outside `/api/V/...` and `/apis/G/V/...` (`/api`, `/apis/G/V`, `/version`) are
  non-resource requests, whose verb is the method in lower case.
- `Authorizer` holds Roles, ClusterRoles, RoleBindings and ClusterRoleBindings (`load`
  takes the documents `helm template` prints and skips other kinds) and decides as
  `RBACAuthorizer` does: ClusterRoleBindings grant everywhere (cluster-scoped requests,
  every namespace and all-namespaces lists); a RoleBinding grants only in its namespace,
  whether it binds a Role of that namespace or a ClusterRole; a rule covers a request when
  its verbs, apiGroups, resources (`res/sub` for a subresource, `*/sub` for a subresource
  of anything) and resourceNames (empty: any; otherwise only requests naming one of them,
  so never a list, a watch without a name, or a create) all match, `*` matching anything;
  nonResourceURLs match a path exactly or by a `prefix*`. A binding whose role does not
  exist adds `RBAC: role.rbac.authorization.k8s.io "x" not found` to the denial, as a real
  server does. Subjects: User (by name), Group, ServiceAccount (`system:serviceaccount:NS:NAME`,
  its namespace defaulting to the RoleBinding's). Every authenticated user is in
  `system:authenticated`, to which the bootstrap roles `system:discovery`,
  `system:public-info-viewer` and `system:basic-user` are bound, so discovery (`/api`,
  `/apis/...`, `/version`) is allowed to anyone the server knows.
- `forbidden_status` is the `403` body: `<resource>.<group> "<name>" is forbidden: User
  "<user>" cannot <verb> resource "<resource>[/<sub>]" in API group "<group>" in the
  namespace "<ns>"` (or `at the cluster scope`, or `cannot <verb> path "<path>"`), reason
  `Forbidden`, details naming the group, resource (as `kind`) and name.

Not modelled: aggregated ClusterRoles (`aggregationRule` is refused, not ignored),
impersonation, the Node authorizer, webhook authorizers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.operator import apiserver_rules

RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"
RBAC_KINDS = frozenset({"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"})
AUTHENTICATED = "system:authenticated"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class User:
    """An authenticated user: its name and the groups the authenticator puts it in."""

    name: str
    groups: tuple[str, ...] = (AUTHENTICATED,)


def service_account(namespace: str, name: str) -> str:
    """The user name a ServiceAccount's token authenticates as."""
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def user_named(name: str) -> User:
    """The user a token of `name` is: a ServiceAccount is also in `system:serviceaccounts` and
    `system:serviceaccounts:NS`, as the service account authenticator puts it."""
    if name.startswith(SERVICE_ACCOUNT_PREFIX):
        namespace = name[len(SERVICE_ACCOUNT_PREFIX) :].split(":", 1)[0]
        return User(name, ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED))
    return User(name)


@dataclass(frozen=True)
class Attributes:
    """What the authorizer decides on: one request, as `RequestInfoFactory` reads it."""

    user: User
    verb: str
    path: str
    resource_request: bool
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _flag(value: str | None) -> bool:
    """A boolean query parameter as apimachinery reads it: absent, "0" or "false" (any case)
    are false, anything else is true."""
    return value is not None and not (value == "0" or value.lower() == "false")


def _field_selector_name(selector: str) -> str:
    """The name a `fieldSelector` requires exactly (`metadata.name=N` or `==N`), if any."""
    for term in selector.split(","):
        if "!=" in term:
            continue
        key, sep, value = term.replace("==", "=").partition("=")
        if sep and key.strip() == "metadata.name":
            name = value.strip()
            if name not in (".", "..") and "/" not in name and "%" not in name:
                return name
    return ""


_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_SPECIAL_VERBS = frozenset({"proxy", "watch"})  # the deprecated /api/v1/{verb}/... forms
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def request_attributes(user: User, method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """The attributes of a request, as a real server's `RequestInfoFactory` computes them."""
    non_resource = Attributes(user=user, verb=method.lower(), path=path, resource_request=False)
    parts = path.strip("/").split("/") if path.strip("/") else []
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    if parts[0] in _SPECIAL_VERBS and len(parts) >= 2:
        verb, parts = parts[0], parts[1:]
    else:
        verb = _METHOD_VERBS.get(method.upper(), "")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if _flag(query.get("watch")) else "list"
        name = _field_selector_name(query.get("fieldSelector") or "")
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(
        user=user,
        verb=verb,
        path=path,
        resource_request=True,
        api_group=group,
        api_version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
    )


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value or ())


@dataclass(frozen=True)
class Rule:
    """One PolicyRule of a Role or ClusterRole."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Rule:
        rule = cls(
            verbs=_strings(raw.get("verbs")),
            api_groups=_strings(raw.get("apiGroups")),
            resources=_strings(raw.get("resources")),
            resource_names=_strings(raw.get("resourceNames")),
            non_resource_urls=_strings(raw.get("nonResourceURLs")),
        )
        if not rule.verbs:
            raise ValueError(f"an RBAC rule needs verbs: {dict(raw)}")
        if rule.resources and rule.non_resource_urls:
            raise ValueError(f"an RBAC rule has resources or nonResourceURLs, not both: {dict(raw)}")
        if not rule.resources and not rule.non_resource_urls:
            raise ValueError(f"an RBAC rule needs resources or nonResourceURLs: {dict(raw)}")
        return rule

    def allows(self, attributes: Attributes) -> bool:
        """`RuleAllows`: every part of the rule covers the request."""
        if not ("*" in self.verbs or attributes.verb in self.verbs):
            return False
        if not attributes.resource_request:
            return any(
                url == "*"
                or url == attributes.path
                or (url.endswith("*") and attributes.path.startswith(url[:-1]))
                for url in self.non_resource_urls
            )
        if not ("*" in self.api_groups or attributes.api_group in self.api_groups):
            return False
        combined, subresource = attributes.combined_resource, attributes.subresource
        if not any(
            resource in ("*", combined) or (bool(subresource) and resource == f"*/{subresource}")
            for resource in self.resources
        ):
            return False
        return not self.resource_names or attributes.name in self.resource_names


@dataclass(frozen=True)
class Subject:
    kind: str  # User, Group, ServiceAccount
    name: str
    namespace: str = ""

    def applies_to(self, user: User, binding_namespace: str) -> bool:
        """`appliesToUser`: a ServiceAccount without a namespace is the RoleBinding's own."""
        if self.kind == "User":
            return user.name == self.name
        if self.kind == "Group":
            return self.name in user.groups
        if self.kind == "ServiceAccount":
            namespace = self.namespace or binding_namespace
            return bool(namespace) and user.name == service_account(namespace, self.name)
        return False


@dataclass(frozen=True)
class Binding:
    """A RoleBinding (`namespace` set) or a ClusterRoleBinding (`namespace` empty)."""

    name: str
    namespace: str
    role_kind: str  # Role or ClusterRole
    role_name: str
    subjects: tuple[Subject, ...]

    def applies_to(self, user: User) -> bool:
        return any(subject.applies_to(user, self.namespace) for subject in self.subjects)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # for a denial: why beyond "no rule allows it" (a missing role), else ""


def _bootstrap() -> list[dict[str, Any]]:
    """The default roles every authenticated user has (v1.36's bootstrap policy)."""

    def cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": RBAC_API_VERSION,
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        }

    def bound(name: str) -> dict[str, Any]:
        return {
            "apiVersion": RBAC_API_VERSION,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": AUTHENTICATED}],
        }

    public = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
    discovery = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", *public]
    self_reviews = [
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectrulesreviews"],
            "verbs": ["create"],
        },
        {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
    ]
    return [
        cluster_role("system:discovery", [{"nonResourceURLs": discovery, "verbs": ["get"]}]),
        bound("system:discovery"),
        cluster_role("system:public-info-viewer", [{"nonResourceURLs": public, "verbs": ["get"]}]),
        bound("system:public-info-viewer"),
        cluster_role("system:basic-user", self_reviews),
        bound("system:basic-user"),
    ]


@dataclass
class Authorizer:
    """Roles, ClusterRoles and their bindings, and the decisions they make."""

    roles: dict[tuple[str, str], tuple[Rule, ...]] = field(default_factory=dict)  # (namespace, name)
    cluster_roles: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.load(_bootstrap())

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]]) -> Authorizer:
        authorizer = cls()
        authorizer.load(objects)
        return authorizer

    def load(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Add the RBAC objects among `objects` (e.g. every document `helm template` printed);
        other kinds are skipped. A later object of the same kind and name replaces the earlier."""
        for obj in objects:
            kind = obj.get("kind")
            if kind not in RBAC_KINDS:
                continue
            if obj.get("apiVersion") != RBAC_API_VERSION:
                raise ValueError(f"{kind} of {obj.get('apiVersion')}: only {RBAC_API_VERSION} is served")
            meta = obj.get("metadata") or {}
            name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
            if not name:
                raise ValueError(f"{kind} without a name")
            namespaced = kind in ("Role", "RoleBinding")
            if namespaced and not namespace:
                raise ValueError(f"{kind} {name} has no namespace")
            if kind in ("Role", "ClusterRole"):
                if obj.get("aggregationRule"):
                    raise ValueError(f"ClusterRole {name}: aggregationRule is not modelled by the fake")
                rules = tuple(Rule.parse(r) for r in obj.get("rules") or ())
                if kind == "Role":
                    if any(r.non_resource_urls for r in rules):
                        raise ValueError(f"Role {namespace}/{name}: nonResourceURLs only in a ClusterRole")
                    self.roles[(namespace, name)] = rules
                else:
                    self.cluster_roles[name] = rules
                continue
            ref = obj.get("roleRef") or {}
            role_kind = str(ref.get("kind") or "")
            if role_kind not in (("Role", "ClusterRole") if namespaced else ("ClusterRole",)):
                raise ValueError(f"{kind} {name}: roleRef.kind {role_kind!r} is not allowed")
            subjects = tuple(
                Subject(str(s.get("kind") or ""), str(s.get("name") or ""), str(s.get("namespace") or ""))
                for s in obj.get("subjects") or ()
            )
            binding = Binding(
                name, namespace if namespaced else "", role_kind, str(ref.get("name") or ""), subjects
            )
            self.bindings = [b for b in self.bindings if (b.name, b.namespace) != (name, binding.namespace)]
            self.bindings.append(binding)

    def _rules(self, binding: Binding) -> tuple[Rule, ...] | str:
        """The rules a binding grants, or the error a real server reports for a missing role."""
        if binding.role_kind == "Role":
            found = self.roles.get((binding.namespace, binding.role_name))
        else:
            found = self.cluster_roles.get(binding.role_name)
        if found is None:
            return f'{binding.role_kind.lower()}.rbac.authorization.k8s.io "{binding.role_name}" not found'
        return found

    def rules_for(self, user: User, namespace: str) -> Iterator[tuple[Binding, tuple[Rule, ...] | str]]:
        """`VisitRulesFor`: the ClusterRoleBindings' rules, then (for a namespaced request) those
        of the RoleBindings in that namespace; a missing role comes as its error text."""
        for binding in self.bindings:
            if not binding.namespace and binding.applies_to(user):
                yield binding, self._rules(binding)
        if namespace:
            for binding in self.bindings:
                if binding.namespace == namespace and binding.applies_to(user):
                    yield binding, self._rules(binding)

    def authorize(self, attributes: Attributes) -> Decision:
        errors: list[str] = []
        namespace = attributes.namespace if attributes.resource_request else ""
        for _binding, rules in self.rules_for(attributes.user, namespace):
            if isinstance(rules, str):
                errors.append(rules)
            elif any(rule.allows(attributes) for rule in rules):
                return Decision(True)
        if not errors:
            return Decision(False)
        return Decision(False, "RBAC: " + (errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"))


def _q(text: str) -> str:
    """Go's `%q` of a string (a JSON string literal, as far as these texts go)."""
    return json.dumps(text, ensure_ascii=False)


def forbidden_message(attributes: Attributes) -> str:
    """apiserver's `forbiddenMessage`: who cannot do what, where."""
    user = _q(attributes.user.name)
    if not attributes.resource_request:
        return f"User {user} cannot {attributes.verb} path {_q(attributes.path)}"
    where = f"in the namespace {_q(attributes.namespace)}" if attributes.namespace else "at the cluster scope"
    return (
        f"User {user} cannot {attributes.verb} resource {_q(attributes.combined_resource)} "
        f"in API group {_q(attributes.api_group)} {where}"
    )


def forbidden_status(attributes: Attributes, reason: str = "") -> dict[str, Any]:
    """The body of a real server's `403` for a denied request (`responsewriters.Forbidden`)."""
    text = forbidden_message(attributes)
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):  # its sanitizer
        text = text.replace(raw, escaped)
    if reason:
        text = f"{text}: {reason}"
    group = attributes.api_group
    resource = attributes.resource
    qualified = f"{resource}.{group}" if group else resource
    if not qualified:
        message = f"forbidden: {text}"
    elif not attributes.name:
        message = f"{qualified} is forbidden: {text}"
    else:
        message = f"{qualified} {_q(attributes.name)} is forbidden: {text}"
    details = {k: v for k, v in (("name", attributes.name), ("group", group), ("kind", resource)) if v}
    return apiserver_rules.failure_status(403, "Forbidden", message, details)
