#!/usr/bin/env python3
"""Strict schema validation of rendered Kubernetes manifests.

    python3 validate.py [--kubernetes-version V ...] FILE...   (FILE may be "-" for stdin)

Input is multi-document YAML such as the output of `kubectl kustomize DIR`.
Every object is validated; one that cannot be (no schema for its kind) fails.

Two tools, because no single one covers both kinds of object strictly:

* Core Kubernetes kinds: kubernetes-validate (PyPI), whose strict JSON schemas
  reject unknown fields. Each object is checked against every requested
  Kubernetes version (default: the oldest and newest we support), so a field
  that is too new for the oldest release fails.
* prometheus-operator kinds (monitoring.coreos.com/*): validate-crs.mjs, using
  @kubernetes-models/prometheus-operator (npm). Its JSON schemas check types,
  enums and required fields but allow unknown fields, so it also type-checks
  each object with the TypeScript compiler against the package's interfaces,
  which reports unknown fields.

Also checked: every object has apiVersion, kind and metadata.name, and no two
objects share apiVersion, kind, namespace and name.

Exit status: 0 all objects valid, 1 some object invalid, 2 usage or tool error.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml
from kubernetes_validate import utils as kv

HERE = Path(__file__).resolve().parent
DEFAULT_VERSIONS = ["1.29.0", "1.37.0"]
CR_GROUP = "monitoring.coreos.com"


def die(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings and rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(filename):
    """Yields (where, document) for each non-empty document; `List` kinds are flattened."""
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
        docs = list(yaml.load_all(text, Loader=Loader))
    except (OSError, yaml.YAMLError) as e:
        die(f"{filename}: {e}")
    for n, doc in enumerate(docs, 1):
        if isinstance(doc, dict) and doc.get("apiVersion") == "v1" and doc.get("kind") == "List":
            for m, item in enumerate(doc.get("items") or []):
                yield f"{filename} document {n} item {m}", item
        elif doc is not None:
            yield f"{filename} document {n}", doc


def label(obj):
    name = (obj.get("metadata") or {}).get("name", "<no name>")
    return f"{obj.get('apiVersion')} {obj.get('kind')}/{name}"


def basic_errors(obj):
    if not isinstance(obj, dict):
        return [("(root)", "document is not a mapping")]
    errors = [(field, "required string field missing")
              for field in ("apiVersion", "kind") if not isinstance(obj.get(field), str)]
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        errors.append(("metadata.name", "required string field missing"))
    return errors


def field_path(parts):
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".") or "(root)"


def core_errors(obj, versions):
    """Validates against each Kubernetes version; identical errors are merged."""
    found = {}  # (path, message) -> [versions]
    for version in versions:
        try:
            kv.validate(obj, version, strict=True)
            continue
        except kv.ValidationError as e:
            key = (field_path(e.path), e.message)
        except kv.SchemaNotFoundError:
            key = ("(root)", f"no schema for kind {obj['kind']} in {obj['apiVersion']}")
        found.setdefault(key, []).append(version)
    return [(path, f"{message} [Kubernetes {', '.join(vs)}]") for (path, message), vs in found.items()]


def passed_note(obj, versions):
    if obj["apiVersion"].split("/")[0] == CR_GROUP:
        return ""
    return f" [Kubernetes {', '.join(versions)}]"


def cr_errors(objects):
    """Runs validate-crs.mjs on all objects at once; returns a list of error lists."""
    if not objects:
        return []
    for dep in ("typescript", "@kubernetes-models/prometheus-operator"):
        if not (HERE / "node_modules" / dep).is_dir():
            die(f"{dep} is not installed: run `npm ci --prefix deploy/kubernetes/tests`")
    try:
        proc = subprocess.run(["node", str(HERE / "validate-crs.mjs")], input=json.dumps(objects),
                              capture_output=True, text=True, check=False)
    except FileNotFoundError:
        die("node is not installed")
    if proc.returncode != 0:
        die(f"validate-crs.mjs failed (exit {proc.returncode}):\n{proc.stderr}")
    return [[(e["path"], e["message"]) for e in r["errors"]] for r in json.loads(proc.stdout)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubernetes-version", action="append", dest="versions", metavar="VERSION",
                        help=f"repeatable (default: {' and '.join(DEFAULT_VERSIONS)})")
    parser.add_argument("files", nargs="+", metavar="FILE", help='YAML file, or "-" for stdin')
    args = parser.parse_args()
    versions = args.versions or DEFAULT_VERSIONS
    supported = {kv.major_minor(v) for v in kv.all_versions()}
    for v in versions:
        if kv.major_minor(v.lstrip("v")) not in supported:
            die(f"Kubernetes {v} is not supported by kubernetes-validate; choose from {sorted(supported)}")

    objects = [(where, obj) for f in args.files for where, obj in load(f)]
    if not objects:
        die("no Kubernetes objects in the input")

    errors = [basic_errors(obj) for _, obj in objects]
    seen = {}
    for i, (where, obj) in enumerate(objects):
        if errors[i]:
            continue
        key = (obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if key in seen:
            errors[i].append(("metadata.name", f"duplicate of the object in {seen[key]}"))
        seen.setdefault(key, where)

    crs = [i for i, (_, obj) in enumerate(objects)
           if not errors[i] and obj["apiVersion"].split("/")[0] == CR_GROUP]
    for i, errs in zip(crs, cr_errors([objects[i][1] for i in crs])):
        errors[i] += errs
    for i, (_, obj) in enumerate(objects):
        if i not in crs and not errors[i]:
            errors[i] += core_errors(obj, versions)

    for (where, obj), errs in zip(objects, errors):
        if not errs:
            print(f"ok   {label(obj)}{passed_note(obj, versions)}")
        for path, message in errs:
            print(f"FAIL {label(obj) if isinstance(obj, dict) else where}: {path}: {message}")
    failed = sum(1 for errs in errors if errs)
    print(f"{len(objects) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a bug or a broken install, not an invalid manifest
        die(f"{type(e).__name__}: {e}")
