"""Stable Diffusion pipelines with random weights, for tests and benchmarks offline.

`tiny`: the SD architecture (UNet, VAE, CLIP text encoder and tokenizer) shrunk to
about 2.6 M parameters, with SD's latent scale (8); its images are noise. `sd15`: the full SD 1.5
architecture (UNet ≈ 860 M parameters, VAE, CLIP ViT-L/14 text encoder); `sd-turbo`: the
SD 2.1 architecture SD-Turbo uses (UNet ≈ 866 M parameters with linear projections,
OpenCLIP ViT-H text encoder, the same VAE); `sdxs`: SDXS-512's (IDKiro/sdxs-512-0.9: a
3-stage UNet of ≈ 319 M parameters without a mid block, one layer per block and no attention
at the finest stage, SD-Turbo's text encoder, and a tiny decoder as its own VAE): speed does
not depend on weight values, so benchmarks use them. Each comes with a random tiny VAE
(`AutoencoderTiny`, the architecture of madebyollin/taesd; shrunk for `tiny`) in the
subfolder `vae_tiny`. All
are built deterministically (seeded) and saved with `save_pretrained`, so they load with
`from_pretrained` like a downloaded model. A marker file says the weights are random.
"""

import json
import os
import shutil
from pathlib import Path

RANDOM_WEIGHTS_MARKER = "speech2image_random_weights.json"
TINY_VAE_SUBFOLDER = "vae_tiny"

ARCHITECTURES = {
    # SD's latent scale (8: four VAE blocks), so an image has as many latents as a real model's
    # (256²: 32x32), not 16 times more. Native size 64 (8x8 latents); the smallest size allowed,
    # 16², gives 2x2 latents, which the UNet's one downsampling halves.
    "tiny": dict(
        unet=dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=8, cross_attention_dim=32,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=8),
        vae=dict(block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4, sample_size=64),
        text=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5, projection_dim=32),
        # the same latent scale (8) as the VAE above: taesd's shape, 16 channels wide (AutoencoderTiny
        # needs one width for all blocks); with one block each its random decoder draws a black image
        vae_tiny=dict(encoder_block_out_channels=(16,) * 4, decoder_block_out_channels=(16,) * 4,
                      num_encoder_blocks=(1, 2, 2, 2), num_decoder_blocks=(2, 2, 2, 1)),
    ),
    "sd15": dict(
        unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64,
                  cross_attention_dim=768, attention_head_dim=8),
        vae=dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512),
        text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                  projection_dim=768, hidden_act="quick_gelu"),
        vae_tiny=dict(),  # AutoencoderTiny's defaults are taesd's
    ),
    "sd-turbo": dict(
        unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64,
                  cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True),
        vae=dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=768),
        text=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                  projection_dim=512, hidden_act="gelu"),
        vae_tiny=dict(),
        scheduler=dict(timestep_spacing="trailing"),
    ),
    # no `vae`: the model's own VAE is the tiny one
    "sdxs": dict(
        unet=dict(block_out_channels=(320, 640, 1280), layers_per_block=1, sample_size=64, cross_attention_dim=1024,
                  attention_head_dim=(5, 10, 20), use_linear_projection=True, mid_block_type=None,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
        text=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                  projection_dim=512, hidden_act="gelu"),
        vae_tiny=dict(),
        scheduler=dict(timestep_spacing="trailing"),
    ),
}


def _byte_level_tokenizer():
    """A CLIP tokenizer over the 256 byte-level symbols (no merges): needs no download."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": i + len(symbols) for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_random_pipeline(architecture: str = "tiny"):
    """Build an SD-architecture pipeline with seeded random weights (in memory)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    spec = ARCHITECTURES[architecture]
    tokenizer = _byte_level_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, **spec["unet"])
    torch.manual_seed(1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, **spec["vae"]) if "vae" in spec else \
        build_random_tiny_vae(architecture)
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **spec["text"],
    ))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, **{"timestep_spacing": "leading", **spec.get("scheduler", {})})
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build_random_tiny_vae(architecture: str = "tiny"):
    """A tiny VAE (diffusers' AutoencoderTiny) with seeded random weights, for `architecture`."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(3)
    return AutoencoderTiny(**ARCHITECTURES[architecture]["vae_tiny"])


def save_random_pipeline(directory: Path, architecture: str = "tiny") -> Path:
    """Build and save a random pipeline (atomically) unless `directory` holds one already."""
    directory = Path(directory)
    if (directory / RANDOM_WEIGHTS_MARKER).exists():
        return directory
    partial = directory.with_name(f"{directory.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    build_random_pipeline(architecture).save_pretrained(partial, safe_serialization=True)
    build_random_tiny_vae(architecture).save_pretrained(partial / TINY_VAE_SUBFOLDER, safe_serialization=True)
    (partial / RANDOM_WEIGHTS_MARKER).write_text(json.dumps(
        {"architecture": architecture, "random_weights": True,
         "note": "random weights for tests and benchmarks: its images are noise"}, indent=1))
    try:
        os.replace(partial, directory)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    return directory


def has_random_weights(model_dir) -> bool:
    """Whether a model directory was made by :func:`save_random_pipeline`."""
    return (Path(model_dir) / RANDOM_WEIGHTS_MARKER).exists()
