"""Validate Kubernetes manifests offline, strictly, for tests/it/k8s.rs.

usage: validate.py KUBERNETES_VERSION CRD_SCHEMAS_JSON FILE...

Built-in kinds are checked with kubernetes-validate (PyPI; it carries the Kubernetes JSON
schemas, no download at run time) in strict mode: an unknown field is an error. A kind it has no
schema for is an error too (its own CLI only warns). Custom resources are checked against the
JSON Schemas named in CRD_SCHEMAS_JSON, a JSON object {"group/version/Kind": "schema path"}.
A key given twice in one mapping is an error (YAML loaders keep the last one silently).

Prints one JSON object: {"resources": [{"file", "kind", "name", "doc", "error"}]}; exits 1 if
any resource (or a file's YAML) has an error, 2 on a usage error or a file not read.
"""

import json
import sys

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def check(doc, version, crds):
    if not isinstance(doc, dict):
        return "not a mapping"
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api, str) or not isinstance(kind, str):
        return "no apiVersion or kind"
    key = f"{api}/{kind}"
    if key in crds:
        validator = jsonschema.Draft202012Validator(crds[key])
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            return f"{'.'.join(map(str, e.path))}: {e.message}"
        return None
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(map(str, e.path))}: {e.message}"
    except SchemaNotFoundError:
        return f"no schema for {key} in Kubernetes {version} (nor a CRD schema)"
    return None


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    version, crd_map, files = argv[1], argv[2], argv[3:]
    with open(crd_map) as f:
        crds = {}
        for key, path in json.load(f).items():
            with open(path) as s:
                crds[key] = json.load(s)
    out = []
    for name in files:
        try:
            with open(name) as f:
                docs = [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]
        except OSError as e:
            print(f"{name}: {e}", file=sys.stderr)
            return 2
        except yaml.YAMLError as e:
            error = f"not valid YAML: {e}"
            out.append({"file": name, "kind": None, "name": None, "doc": None, "error": error})
            continue
        for doc in docs:
            meta = doc.get("metadata") if isinstance(doc, dict) else None
            out.append(
                {
                    "file": name,
                    "kind": doc.get("kind") if isinstance(doc, dict) else None,
                    "name": meta.get("name") if isinstance(meta, dict) else None,
                    "doc": doc,
                    "error": check(doc, version, crds),
                }
            )
    json.dump({"resources": out}, sys.stdout)
    return 1 if any(r["error"] for r in out) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
