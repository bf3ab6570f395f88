"""`modelengine check`: load, export and verify ModelEngine files, report the findings.

What a pull request can check before anything reaches a cluster: the spec parses, the
model loads, exports as the spec asks, and agrees with PyTorch, and every data-dependent
branch tracing froze is found and judged (frozen and flips: error; frozen but constant:
warning). No engine is built and no store is touched.

- `run.check_file`: one YAML through the stages into a `FileResult` of `Finding`s placed
  on the line to change (the frozen `if` in the model's source, or the YAML field);
- `findings`: the rules (one per kind of finding, with a stable id) and outcomes;
- `text`, `sarif`, `junit`: the reports (text and JSON, SARIF 2.1.0 for code scanning,
  JUnit XML for CI dashboards), with repository-relative paths (`paths`);
- `command`: the CLI (`--format`, `--output`, `--fail-on`, exit codes).

It builds on api, export, verify and the store's source fetching only: never on the
builder, backends, operator or runtime (a test holds it to that).
"""
