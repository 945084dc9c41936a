"""Text → images with the tiny random-weights SD pipeline: real diffusers, no network."""

import contextlib
import hashlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

from speech2image.errors import DeadlineExceeded, InvalidRequest, ModelLoadError
from speech2image.imaging.diffusion import generate, load_engine, preview_steps
from speech2image.imaging.options import DiffusionConfig, GenerateOptions
from speech2image.imaging.random_pipelines import RANDOM_WEIGHTS_MARKER, save_random_pipeline
from speech2image.limits import MAX_SEED
from speech2image.schema import from_blob
from tests.support.turns import DeadlineAfterChecks


@pytest.fixture(scope="module")
def engine():
    return load_engine(DiffusionConfig(model="tiny"))


def draw(engine, prompt: str, **options):
    return generate(engine, prompt, engine.resolve(GenerateOptions(**options)))


def pngs(images):
    return [from_blob(image.png) for image in images]


@contextlib.contextmanager
def runs_of(*modules):
    """A list that gets an item each time one of `modules` runs, while the block runs."""
    runs = []
    hooks = [module.register_forward_hook(lambda *_: runs.append(1)) for module in modules]
    try:
        yield runs
    finally:
        for hook in hooks:
            hook.remove()


def test_n_decodable_pngs_of_the_requested_size_with_their_settings(engine):
    images = draw(engine, "a red apple", num_images=3, seed=11, width=96, height=48, steps=2, guidance_scale=3.0,
                  negative_prompt="blur")
    assert len(images) == 3
    for k, image in enumerate(images):
        decoded = Image.open(io.BytesIO(from_blob(image.png)))
        assert decoded.format == "PNG" and decoded.size == (96, 48)
        assert (image.seed, image.steps, image.guidance_scale, image.width, image.height) == (11 + k, 2, 3.0, 96, 48)
        assert (image.prompt, image.negative_prompt, image.model, image.scheduler) == ("a red apple", "blur", "tiny", "euler")
        assert image.random_weights and image.seconds > 0 and not image.prompt_truncated


def test_presets_and_native_size_fill_what_the_request_leaves_out(engine):
    image = draw(engine, "a red apple")[0]
    assert (image.steps, image.guidance_scale, image.width, image.height) == (4, 7.5, 64, 64)
    assert 0 <= image.seed <= MAX_SEED == 2**31 - 1


def test_same_seed_same_bytes_and_each_image_reproducible_alone(engine):
    first = pngs(draw(engine, "a red apple", num_images=2, seed=5))
    again = pngs(draw(engine, "a red apple", num_images=2, seed=5))
    alone = pngs(draw(engine, "a red apple", num_images=1, seed=6))
    assert first == again
    assert first[0] != first[1]
    assert alone[0] == first[1]


@pytest.mark.parametrize("guidance,negative,encodings", [(1.0, "", 1), (3.0, "blur", 2)])
def test_the_prompt_is_encoded_once_per_request_and_draws_what_the_pipeline_would(engine, guidance, negative,
                                                                                   encodings):
    with runs_of(engine.pipe.text_encoder) as runs:
        images = draw(engine, "a red apple", num_images=3, seed=5, steps=2, guidance_scale=guidance,
                      negative_prompt=negative)
    assert len(runs) == encodings  # the prompt (and the negative one where guidance needs it), not per image
    own = engine.pipe(prompt="a red apple", negative_prompt=negative or None, num_inference_steps=2,
                      guidance_scale=guidance, width=64, height=64, generator=torch.Generator("cpu").manual_seed(7))
    assert np.array_equal(np.asarray(own.images[0]), np.asarray(Image.open(io.BytesIO(from_blob(images[2].png)))))


def test_the_prompt_is_encoded_without_autograd_in_pytorch():
    """Outside the pipeline's call no_grad is not on: PyTorch would keep the text encoder's
    activations (118 MiB for SD-Turbo's) for the whole request."""
    engine = load_engine(DiffusionConfig(model="tiny", diffusion_backend="torch"))
    autograd = []
    engine.pipe.text_encoder.register_forward_hook(lambda *_: autograd.append(torch.is_grad_enabled()))
    draw(engine, "a red apple", steps=2, guidance_scale=3.0)
    assert autograd == [False, False]  # the prompt and the negative one


def test_different_seed_or_prompt_gives_different_images(engine):
    base = pngs(draw(engine, "a red apple", seed=5))
    assert pngs(draw(engine, "a red apple", seed=6)) != base
    assert pngs(draw(engine, "a blue apple", seed=5)) != base


def test_scheduler_by_name(engine):
    images = {name: draw(engine, "a red apple", seed=5, scheduler=name, steps=3)[0] for name in ("euler", "ddim", "dpm++")}
    assert {i.scheduler for i in images.values()} == {"euler", "ddim", "dpm++"}
    assert pngs([images["ddim"]]) != pngs([images["euler"]])
    assert pngs(draw(engine, "a red apple", seed=5, steps=3)) == pngs([images["euler"]])


@pytest.mark.parametrize("options,fragment", [
    (GenerateOptions(width=8), "invalid width=8: allowed 16..512"),
    (GenerateOptions(height=520), "invalid height=520: allowed 16..512"),
])
def test_sizes_outside_the_model_limits_are_rejected(engine, options, fragment):
    with pytest.raises(InvalidRequest, match=fragment):
        engine.resolve(options)


def test_long_prompt_is_truncated_with_a_warning(engine):
    image = draw(engine, "a red apple on a wooden table " * 20, seed=1)[0]
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
        load_engine(DiffusionConfig(model="no-such-org/no-such-model", local_files_only=True))
    message = str(raised.value)
    assert "'no-such-org/no-such-model' could not be loaded" in message and "model='tiny'" in message
    assert "\n" not in message


def test_drawing_stops_between_two_denoising_steps_when_its_turn_ends(engine):
    turn = DeadlineAfterChecks(4)
    with pytest.raises(DeadlineExceeded, match=r"^deadline passed at step 3 of 4 of image 1 of 3; "):
        generate(engine, "a cat", engine.resolve(GenerateOptions(num_images=3, steps=4, width=32, height=32)), turn=turn)
    assert turn.places[:2] == ["the prompt, before its encoding", "image 1 of 3, before its first step"]
    assert len(turn.places) == 5


def test_a_turn_ended_before_the_drawing_does_not_encode_the_prompt(engine):
    with runs_of(engine.pipe.text_encoder) as runs, \
            pytest.raises(DeadlineExceeded, match=r"^deadline passed at the prompt, before its encoding; "):
        generate(engine, "a cat", engine.resolve(GenerateOptions(width=32, height=32)), turn=DeadlineAfterChecks(0))
    assert not runs


def test_pndm_with_fewer_steps_than_its_runge_kutta_start_is_refused(engine):
    """diffusers' PNDM begins with 4 Runge-Kutta steps (this model's config does not skip them):
    fewer made a ValueError in the middle of the work."""
    with pytest.raises(InvalidRequest, match=r"^invalid steps=3: the pndm scheduler takes 4 or more"):
        engine.resolve(GenerateOptions(scheduler="pndm", steps=3))
    assert draw(engine, "a red apple", seed=5, scheduler="pndm", steps=4)[0].steps == 4


@pytest.mark.parametrize(("steps", "partial_images", "previews"), [
    (4, 3, (1, 2, 3)), (4, 1, (2,)), (10, 2, (3, 7)), (2, 3, (1,)), (1, 3, ()), (8, 0, ())])
def test_previews_come_at_evenly_spaced_steps_before_the_last(steps, partial_images, previews):
    assert preview_steps(steps, partial_images) == previews


def test_progress_tells_each_step_each_preview_and_each_image_as_it_is_done(engine):
    told = []
    settings = engine.resolve(GenerateOptions(num_images=2, steps=4, width=64, height=64, seed=3))
    images = generate(engine, "a cat", settings, partial_images=1,
                      progress=lambda event, index, step, steps, image: told.append((event, index, step, steps, image)))
    first = [(event, step) for event, index, step, _, _ in told if index == 0]
    assert first == [("step", 1), ("step", 2), ("image.partial", 2), ("step", 3), ("step", 4), ("image.completed", 4)]
    assert [index for _, index, *_ in told] == [0] * 6 + [1] * 6  # image 0 done before image 1 begins
    previews = [image for event, _, _, _, image in told if event == "image.partial"]
    assert all(p.partial and Image.open(io.BytesIO(from_blob(p.png))).size == (32, 32) for p in previews)  # half
    assert all(Image.open(io.BytesIO(from_blob(image.png))).size == (64, 64) for image in images)
    completed = [image for event, _, _, _, image in told if event == "image.completed"]
    assert pngs(completed) == pngs(images) == pngs(draw(engine, "a cat", num_images=2, steps=4, width=64, height=64,
                                                        seed=3))  # previews do not change the images


@pytest.fixture(scope="module")
def sdxl_engine(tmp_path_factory):
    """An SDXL pipeline (two text encoders, pooled embeddings, time ids) shrunk like `tiny`, random weights."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    from speech2image.imaging.random_pipelines import ARCHITECTURES, build_random_pipeline

    tiny = build_random_pipeline("tiny")
    unet = UNet2DConditionModel(**{**ARCHITECTURES["tiny"]["unet"], "cross_attention_dim": 64},
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=80)  # 6 time ids × 8 + the pooled 32
    pipe = StableDiffusionXLPipeline(
        vae=tiny.vae, text_encoder=tiny.text_encoder, text_encoder_2=CLIPTextModelWithProjection(
            tiny.text_encoder.config), tokenizer=tiny.tokenizer, tokenizer_2=tiny.tokenizer, unet=unet,
        scheduler=tiny.scheduler)
    directory = tmp_path_factory.mktemp("models") / "tiny-sdxl"
    pipe.save_pretrained(directory)
    return load_engine(DiffusionConfig(model=str(directory), local_files_only=True, vae="full"))


def test_sdxl_draws_what_its_pipeline_would_with_each_encoder_run_once(sdxl_engine):
    with runs_of(sdxl_engine.pipe.text_encoder, sdxl_engine.pipe.text_encoder_2) as runs:
        images = draw(sdxl_engine, "a red apple", num_images=2, seed=5, steps=2, guidance_scale=3.0,
                      negative_prompt="blur", width=64, height=64)
    assert len(runs) == 4  # each encoder: the prompt and the negative one
    own = sdxl_engine.pipe(prompt="a red apple", negative_prompt="blur", num_inference_steps=2, guidance_scale=3.0,
                           width=64, height=64, generator=torch.Generator("cpu").manual_seed(6))
    assert np.array_equal(np.asarray(own.images[0]), np.asarray(Image.open(io.BytesIO(from_blob(images[1].png)))))
