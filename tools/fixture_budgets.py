"""How many bytes each part of fixtures/ may take (apparent size, as `du -sb` counts), in one place: the generators
check their own part after writing it, and interop/test_fixture_budgets.py checks them all in CI, so a fixture that
outgrows its budget fails a test instead of being noticed later. Raise a budget deliberately, saying why.

No imports beyond the standard library: CI's venv reads this file."""
import pathlib

# fixtures/models/: the exports of tools/make_fixtures.py (stricter than 10 MiB).
MODELS = 10_000_000
# All of fixtures/. 15 MB until session 9; raised to 20 MB when the contrib-op, int8, attention-op and int4 parity
# fixtures (0.9 MB together) came on top of the chat templates (1.3 MB) and tokenizers (1.5 MB).
ALL = 20_000_000
# fixtures/builder/ (tools/make_builder_fixtures.py): 4 builder models and the contrib-op cases, Pad's and the
# many-row MatMulNBits ones included (1.63 MB).
BUILDER = 1_700_000
# fixtures/int8/ (tools/make_int8_fixtures.py).
INT8 = 400_000
# fixtures/q4/ (tools/make_q4_fixtures.py).
Q4 = 300_000
# Each whole-model folder of fixtures/attention/ (tools/make_attention_models.py).
ATTENTION_MODEL = 150_000


def size(path):
    """Apparent size in bytes of a file or of everything under a folder (`du -sb`, without its folder entries)."""
    path = pathlib.Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())
