"""Stage `fingerprint`: fingerprints/<stage>.txt, the code each stage runs and its settings.yaml
sections, hashed; each stage depends on its own file (see pipeline/fingerprint.py)."""

from pipeline.config import load_params_or_exit
from pipeline.fingerprint import OUT_DIR, settings_tree, write_fingerprints


def main() -> None:
    params = load_params_or_exit()  # a bad params.yaml or settings.yaml fails here, before any stage
    texts = write_fingerprints(settings_tree(), OUT_DIR, host=params.benchmark.host)
    print(f"fingerprint: {len(texts)} stages -> {OUT_DIR}/")


if __name__ == "__main__":
    main()
