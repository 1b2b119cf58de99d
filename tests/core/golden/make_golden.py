"""Write the golden state_dict key lists of the model zoo to ``model_keys.json`` (next to this file).

    python tests/core/golden/make_golden.py            # add entries for models that have none yet
    python tests/core/golden/make_golden.py NAME ...   # (re)write the named entries
    python tests/core/golden/make_golden.py --all      # rewrite every entry

Existing entries are never rewritten unless asked: the file is the reference the zoo is tested against, so a change
to an existing entry must be deliberate (and checked against ``reference/models.md``). Each entry records the class
count it was built with (the model's default) and ``{key: shape}`` in state_dict order.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

from kdvision.core.models import MODELS, create_model, list_models, model_info

GOLDEN = Path(__file__).with_name("model_keys.json")


def describe(name: str) -> dict:
    num_classes = inspect.signature(MODELS.get(name)).parameters["num_classes"].default
    model = create_model(name, num_classes=num_classes)
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    return {"num_classes": num_classes, "input_size": list(model_info(name)["input_size"]), "state_dict": keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="models to (re)write")
    parser.add_argument("--all", action="store_true", help="rewrite every registered model")
    args = parser.parse_args(argv)

    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    registered = list_models()
    unknown = [n for n in args.names if n not in registered]
    if unknown:
        print(f"unknown models: {', '.join(unknown)}", file=sys.stderr)
        return 2
    todo = registered if args.all else (args.names or [n for n in registered if n not in golden])
    for name in todo:
        golden[name] = describe(name)
        print(f"{name}: {len(golden[name]['state_dict'])} tensors")
    stale = sorted(set(golden) - set(registered))
    for name in stale:
        print(f"note: {name} is in the golden file but no longer registered", file=sys.stderr)
    # one model per line keeps diffs readable
    lines = [f"  {json.dumps(n)}: {json.dumps(golden[n], separators=(',', ':'))}" for n in sorted(golden)]
    GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
