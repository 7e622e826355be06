"""``ccpipe models ...``: build, train, install and inspect the pipeline's models."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ccpipe.cli import command

log = logging.getLogger(__name__)


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_command", required=True)

    s = sub.add_parser("build-defaults", help="build every default model that is missing (idempotent; used by setup)")
    s.add_argument("--languages", default="en,fr,de,es", help="comma-separated LM languages")
    s.add_argument("--vocab-size", type=int, default=8000, help="SentencePiece vocabulary (CCNet: 65536)")
    s.add_argument("--force", action="store_true", help="rebuild even what exists")

    s = sub.add_parser("build-kenlm", help="build lmplz + build_binary from the kenlm sdist into $CCPIPE_HOME/bin")
    s.add_argument("--force", action="store_true")

    s = sub.add_parser("train-lm", help="train <lang>.sp.model + <lang>.arpa.bin from text files")
    s.add_argument("language")
    s.add_argument("corpus", nargs="+", help="text files, one paragraph per line")
    s.add_argument("--vocab-size", type=int, default=8000)
    s.add_argument("--order", type=int, default=5)
    s.add_argument("--max-chars", type=int, default=0, help="use at most this many characters (0 = all)")
    s.add_argument("--out-dir", help="model directory (default $CCPIPE_HOME/models/lm)")

    s = sub.add_parser("install-lm", help="install released models (CCNet's) by path or URL")
    s.add_argument("language")
    s.add_argument("--sp", required=True, help="<lang>.sp.model path or URL")
    s.add_argument("--lm", required=True, help="<lang>.arpa.bin path or URL")
    s.add_argument("--out-dir")

    s = sub.add_parser("cutoffs", help="perplexity percentiles p0..p99 per language from a run's output")
    s.add_argument("run_dir", help="output directory of a `ccpipe run` with perplexity on")
    s.add_argument("--out", help="cutoff.csv to write (default <model dir>/cutoff.csv)")
    s.add_argument("--sample", type=int, default=0, help="at most this many documents per language (0 = all)")
    s.add_argument("--min-docs", type=int, default=10)

    s = sub.add_parser("train-ref", help="train the is-reference classifier and report held-out metrics")
    s.add_argument("--positives", nargs="+", required=True, help="reference prose: text files (one paragraph a line) or .tsv")
    s.add_argument("--negatives", nargs="+", required=True, help="WET files of random pages, or parquet output of a run")
    s.add_argument("--out", help="model path (default $CCPIPE_HOME/models/ref/ref_classifier.bin)")
    s.add_argument("--test-frac", type=float, default=0.2)
    s.add_argument("--epoch", type=int, default=25)
    s.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("fit-quality", help="fit quality_score's weights on your labels (JSONL text + 0/1 label)")
    s.add_argument("labels", help='JSONL, one {"text": ..., "label": 0|1} a line (1 = good training text)')
    s.add_argument("--weights", choices=["equal", "free"], default="equal",
                   help="equal: one scale for the sum of signals + a bias; free: a weight per signal + a bias")
    s.add_argument("--model", help="model to start from (default $CCPIPE_HOME/models/quality/quality_score.json)")
    s.add_argument("--out", help="where to write the fitted model (default: over --model)")
    s.add_argument("-c", "--config", help="YAML config whose language-id, perplexity and is-reference models to use")

    sub.add_parser("status", help="list the models present and their sizes")


def _negatives(paths: list[str]) -> list[str]:
    from ccpipe.models.ref import web_documents

    wet = [Path(p) for p in paths if not p.endswith(".parquet")]
    docs = web_documents(wet) if wet else []
    pq_files = [p for p in paths if p.endswith(".parquet")]
    if pq_files:
        import pyarrow.parquet as pq

        for p in pq_files:
            docs += pq.read_table(p, columns=["raw_content"]).column("raw_content").to_pylist()
    return docs


@command("models", _args)
def _models(args: argparse.Namespace) -> int:
    """Build, train and install models (SentencePiece, KenLM, cutoffs, is-reference)."""
    from ccpipe import models as m

    c = args.models_command
    if c == "build-defaults":
        from ccpipe.models.defaults import build_defaults

        report = build_defaults([x for x in args.languages.split(",") if x], args.vocab_size, args.force)
    elif c == "build-kenlm":
        from ccpipe.models.kenlm_tools import build_kenlm_tools, kenlm_tools
        from ccpipe.errors import ModelError

        try:
            if args.force:
                raise ModelError("forced")
            report = {"tools": [str(p) for p in kenlm_tools(build=False)], "built": False}
        except ModelError:
            report = {"tools": [str(p) for p in build_kenlm_tools()], "built": True}
    elif c == "train-lm":
        from ccpipe.models.train import train_lm

        report = train_lm(args.language, [Path(p) for p in args.corpus], Path(args.out_dir) if args.out_dir else None,
                          args.vocab_size, args.order, args.max_chars)
    elif c == "install-lm":
        from ccpipe.models.train import install_lm

        install_lm(args.language, args.sp, args.lm, Path(args.out_dir) if args.out_dir else None)
        report = {"installed": [str(m.sp_path(args.language, args.out_dir)), str(m.kenlm_path(args.language, args.out_dir))]}
    elif c == "cutoffs":
        from ccpipe.models.train import cutoffs_from_run

        out = Path(args.out) if args.out else m.cutoff_path()
        table = cutoffs_from_run(Path(args.run_dir), out, args.sample, args.min_docs)
        report = {"out": str(out), "languages": {k: {"p30": round(v[30], 1), "p60": round(v[60], 1)} for k, v in table.items()}}
    elif c == "train-ref":
        from ccpipe.models.ref import reference_documents, train_ref_classifier

        pos = reference_documents([Path(p) for p in args.positives])
        neg = _negatives(args.negatives)
        report = train_ref_classifier(pos, neg, Path(args.out) if args.out else m.ref_model_path(),
                                      test_frac=args.test_frac, seed=args.seed, epoch=args.epoch)
    elif c == "fit-quality":
        from ccpipe.models.quality import refit

        model = Path(args.model) if args.model else m.quality_model_path()
        report = refit(args.labels, model, Path(args.out) if args.out else model, args.weights, args.config)
    else:  # status
        files = sorted(p for d in (m.lm_dir(), m.ref_dir(), m.quality_model_path().parent) if d.is_dir()
                       for p in d.iterdir())
        report = {"lm_languages": m.available_lm_languages(), "files": {str(p): p.stat().st_size for p in files}}
    print(json.dumps(report, indent=2, default=str))
    return 0
