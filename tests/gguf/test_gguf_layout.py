"""The layout walk refuses every cut and every impossible field, and reads valid files as
the `gguf` package does. It runs in process: it is plain Python and cannot crash."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.gguf.crafted_gguf import Variant, lies, truncations
from tests.gguf.tiny_gguf import ByteVocab, TinyModel

import gguf
from gguf import GGMLQuantizationType as Q
from mlx_serving.gguf import GGUFImportError
from mlx_serving.gguf.layout import TENSOR_TYPES, GGUFLayout, check_layout

TYPES = {"attn_q": Q.Q4_0, "ffn_up": Q.Q8_0, "ffn_down": Q.Q4_K, "attn_v": Q.F16}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "source.gguf"
    return TinyModel(types=TYPES, alignment=64).write(path, ByteVocab())


def as_the_gguf_package_reads_it(path: Path) -> GGUFLayout:
    reader = gguf.GGUFReader(str(path))
    layout = check_layout(path)
    assert layout.data_start == reader.data_offset
    assert layout.metadata_count == len(reader.fields) - 3  # less version and two counts
    assert [t.name for t in layout.tensors] == [t.name for t in reader.tensors]
    for mine, theirs in zip(layout.tensors, reader.tensors, strict=True):
        assert mine.start == theirs.data_offset, mine.name
        assert mine.nbytes == theirs.n_bytes, mine.name
        assert list(mine.dims) == [int(d) for d in theirs.shape], mine.name
        assert mine.type_name == theirs.tensor_type.name, mine.name
    return layout


def test_tensor_types_match_the_gguf_package() -> None:
    for type_id, (name, block_values, block_bytes) in TENSOR_TYPES.items():
        assert Q(type_id).name == name
        assert gguf.GGML_QUANT_SIZES[Q(type_id)] == (block_values, block_bytes), name


@pytest.mark.parametrize("alignment", [None, 64])
def test_valid_files_read_as_the_gguf_package_reads_them(tmp_path: Path, alignment: int) -> None:
    path = TinyModel(types=TYPES, alignment=alignment).write(tmp_path / "t.gguf", ByteVocab())
    assert as_the_gguf_package_reads_it(path).alignment == (alignment or 32)


def test_the_demo_model_reads_as_the_gguf_package_reads_it(smollm2_gguf: Path) -> None:
    started = time.perf_counter()
    layout = check_layout(smollm2_gguf)
    elapsed = time.perf_counter() - started
    assert as_the_gguf_package_reads_it(smollm2_gguf) == layout
    print(
        f"\n[gguf] layout walk of the demo model ({len(layout.tensors)} tensors, "
        f"{layout.metadata_count} metadata entries): {elapsed:.2f} s"
    )


def refused(variant: Variant, directory: Path) -> str:
    path = variant.write(directory)
    with pytest.raises(GGUFImportError) as caught:
        check_layout(path)
    path.unlink()
    return str(caught.value)


def test_a_cut_at_any_boundary_is_refused(source: Path, tmp_path: Path) -> None:
    cuts = list(truncations(source))
    for variant in cuts:
        reason = refused(variant, tmp_path)
        assert "truncated or corrupt" in reason or "not a GGUF file" in reason, variant.label
    assert len(cuts) > 200


def test_a_field_that_cannot_fit_the_file_is_refused(source: Path, tmp_path: Path) -> None:
    impossible = [variant for variant in lies(source) if variant.structural]
    for variant in impossible:
        assert "truncated or corrupt" in refused(variant, tmp_path), variant.label
    assert len(impossible) > 400


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("lie:tensor_count=1099511627776", "the tensor count is 1099511627776, the rest"),
        ("lie:kv_count=18446744073709551615", "the metadata count is 18446744073709551615"),
        ("lie:general.architecture:key_length=1099511627776", "the key of metadata entry 0"),
        ("lie:tokenizer.ggml.tokens:item_type=9", "'tokenizer.ggml.tokens' is an array of arrays"),
        ("lie:general.alignment=0", "general.alignment is 0, not a power of two"),
        ("lie:token_embd.weight:dimension_count=2147483648", "has 2147483648 dimensions"),
        ("lie:output_norm.weight:dim0=2147483648", "has dimensions [2147483648]"),
        ("lie:token_embd.weight:type=4", "'token_embd.weight' has unknown type id 4"),
        ("lie:blk.0.ffn_up.weight:data_offset=1099511627776", "extends past the end"),
    ],
)
def test_the_reason_names_the_field(source: Path, tmp_path: Path, label: str, reason: str) -> None:
    (variant,) = [v for v in lies(source) if v.label == label]
    assert reason in refused(variant, tmp_path)


def test_the_demo_model_cut_like_an_interrupted_download(
    smollm2_gguf: Path, tmp_path: Path
) -> None:
    """1,770,000 bytes end inside the tensor table, where MLX's reader crashed."""
    cut = tmp_path / "partial.gguf"
    with smollm2_gguf.open("rb") as whole:
        cut.write_bytes(whole.read(1_770_000))
    with pytest.raises(GGUFImportError, match="truncated or corrupt: the name of tensor"):
        check_layout(cut)
