"""Text → images with the tiny random-weights SD pipeline: real diffusers, no network."""

import hashlib
import io

import pytest
from PIL import Image

from speech2image.diffusion import GenerateOptions, generate, load_engine
from speech2image.errors import InvalidRequest, ModelLoadError
from speech2image.random_pipelines import RANDOM_WEIGHTS_MARKER, save_random_pipeline


@pytest.fixture(scope="module")
def engine():
    return load_engine("tiny")


def pngs(images):
    return [image.png for image in images]


def test_n_decodable_pngs_of_the_requested_size_with_their_settings(engine):
    images = generate(engine, "a red apple", GenerateOptions(num_images=3, seed=11, width=96, height=48,
                                                              steps=2, guidance_scale=3.0, negative_prompt="blur"))
    assert len(images) == 3
    for k, image in enumerate(images):
        decoded = Image.open(io.BytesIO(image.png))
        assert decoded.format == "PNG" and decoded.size == (96, 48)
        assert (image.seed, image.steps, image.guidance_scale, image.width, image.height) == (11 + k, 2, 3.0, 96, 48)
        assert (image.prompt, image.negative_prompt, image.model, image.scheduler) == ("a red apple", "blur", "tiny", "euler")
        assert image.random_weights and image.seconds > 0 and not image.prompt_truncated


def test_presets_and_native_size_fill_what_the_request_leaves_out(engine):
    image = generate(engine, "a red apple")[0]
    assert (image.steps, image.guidance_scale, image.width, image.height) == (4, 7.5, 64, 64)
    assert 0 <= image.seed < 2**32


def test_same_seed_same_bytes_and_each_image_reproducible_alone(engine):
    first = generate(engine, "a red apple", GenerateOptions(num_images=2, seed=5))
    again = generate(engine, "a red apple", GenerateOptions(num_images=2, seed=5))
    alone = generate(engine, "a red apple", GenerateOptions(num_images=1, seed=6))
    assert pngs(first) == pngs(again)
    assert first[0].png != first[1].png
    assert alone[0].png == first[1].png


def test_different_seed_or_prompt_gives_different_images(engine):
    base = generate(engine, "a red apple", GenerateOptions(seed=5))[0].png
    assert generate(engine, "a red apple", GenerateOptions(seed=6))[0].png != base
    assert generate(engine, "a blue apple", GenerateOptions(seed=5))[0].png != base


def test_scheduler_by_name(engine):
    images = {name: generate(engine, "a red apple", GenerateOptions(seed=5, scheduler=name, steps=3))[0]
              for name in ("euler", "ddim", "dpm++")}
    assert {i.scheduler for i in images.values()} == {"euler", "ddim", "dpm++"}
    assert images["ddim"].png != images["euler"].png
    assert generate(engine, "a red apple", GenerateOptions(seed=5, steps=3))[0].png == images["euler"].png


@pytest.mark.parametrize("options,fragment", [
    (GenerateOptions(width=8), "invalid width=8: allowed 16..512"),
    (GenerateOptions(height=520), "invalid height=520: allowed 16..512"),
])
def test_sizes_outside_the_model_limits_are_rejected(engine, options, fragment):
    with pytest.raises(InvalidRequest, match=fragment):
        generate(engine, "a red apple", options)


def test_long_prompt_is_truncated_with_a_warning(engine):
    image = generate(engine, "a red apple on a wooden table " * 20, GenerateOptions(seed=1))[0]
    assert image.prompt_truncated and "the text encoder read only the first 77" in image.warnings[0]


def test_tiny_model_is_rebuilt_identically_in_a_fresh_cache(tmp_path, engine):
    def digest(directory):
        return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(directory.rglob("*")) if p.is_file()}

    first = save_random_pipeline(tmp_path / "a")
    second = save_random_pipeline(tmp_path / "b")
    assert (first / RANDOM_WEIGHTS_MARKER).exists()
    assert digest(first) == digest(second)
    assert any(name.endswith(".safetensors") for name in digest(first))


def test_unavailable_model_fails_with_what_to_do():
    with pytest.raises(ModelLoadError) as raised:
        load_engine("no-such-org/no-such-model", local_files_only=True)
    message = str(raised.value)
    assert "'no-such-org/no-such-model' could not be loaded" in message and "model='tiny'" in message
    assert "\n" not in message
