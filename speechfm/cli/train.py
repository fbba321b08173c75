"""``speechfm train``: run a recipe's training from a YAML config.

    speechfm train CONFIG.yaml [--recipe NAME] [--exp-dir DIR] [--resume] [key=value ...]
    torchrun --nproc-per-node 2 -m speechfm train CONFIG.yaml ...     (data parallel)

The recipe is ``--recipe NAME`` or, by default, the prefix of the config's
``model_size`` (``ctc_small`` -> ``recipes/ctc``, ``transducer_tiny`` ->
``recipes/transducer``, ``speech_lm_small`` -> ``recipes/inserter``). The command hands
everything after the config to ``recipes/<NAME>/train.py`` (the library imports nothing
from recipes/: it runs the script), so ``speechfm train`` and
``python recipes/<NAME>/train.py`` are the same run.
``key=value`` overrides reach nested fields by dotted paths (``optimizer.lr=2e-3``,
``model.encoder.conformer.num_layers=8``, ``max_steps=100``); values are read as YAML.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from speechfm.errors import SpeechfmError

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
"""recipes/ of the source checkout speechfm runs from."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train with a recipe (YAML config + key=value overrides)",
        description="Run recipes/<recipe>/train.py on a YAML config. The recipe is --recipe "
        "or the prefix of the config's model_size (ctc_small -> ctc). Overrides are dotted "
        "key=value pairs, e.g. optimizer.lr=2e-3 model.encoder.conformer.dim=144 max_steps=2000.",
    )
    p.add_argument("config", help="YAML training config (the recipe's config fields)")
    # REMAINDER: everything else goes to the recipe as it is (options and overrides).
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="...",
                   help="--exp-dir DIR, --resume, --print-config, key=value overrides")
    p.add_argument("--recipe", default=None, help="recipe name (a folder of recipes/)")
    p.set_defaults(func=_train)


_SIZE_PREFIX_RECIPES = {"ast": "ast_adapters", "classifier": "ast_adapters",
                        "speech_lm": "inserter"}
"""Model-size prefixes whose recipe has another name (ast_tiny, classifier_kws ->
recipes/ast_adapters, which trains both classification families; speech_lm_small ->
recipes/inserter). A prefix may hold underscores: the longest match wins."""


def recipe_script(config: str, recipe: str | None, overrides: list[str]) -> Path:
    """recipes/<name>/train.py for a config (``--recipe`` or its model_size's prefix).

    Raises:
        SpeechfmError: no recipe named, or no such recipe in this checkout.
    """
    from speechfm.config import apply_overrides, read_yaml

    if recipe is None:
        size = apply_overrides(read_yaml(config), overrides).get("model_size")
        if not isinstance(size, str) or "_" not in size:
            raise SpeechfmError(f"{config}: no model_size to pick the recipe from; pass --recipe NAME")
        prefixes = [p for p in _SIZE_PREFIX_RECIPES if size.startswith(p + "_")]
        recipe = (_SIZE_PREFIX_RECIPES[max(prefixes, key=len)] if prefixes
                  else size.split("_", 1)[0])
    script = RECIPES_DIR / recipe / "train.py"
    if not script.is_file():
        known = sorted(p.name for p in RECIPES_DIR.glob("*") if (p / "train.py").is_file())
        raise SpeechfmError(f"no recipe {recipe!r} ({script} is missing; recipes here: "
                            f"{', '.join(known) or 'none: speechfm train runs the recipes of a source checkout'})")
    return script


def _train(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    if "--recipe" in rest:  # also accepted after the config
        i = rest.index("--recipe")
        if i + 1 >= len(rest):
            raise SpeechfmError("--recipe needs a name")
        args.recipe = rest[i + 1]
        del rest[i:i + 2]
    overrides = [r for r in rest if "=" in r and not r.startswith("-")]
    script = recipe_script(args.config, args.recipe, overrides)
    argv = sys.argv
    sys.argv = [str(script), args.config, *rest]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    finally:
        sys.argv = argv
    return 0
