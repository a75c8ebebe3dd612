"""Tiny pipelines with random weights, built locally (no hub access), for tests and demos.

``python -m ferry_sdxl.tiny [DIR] [--refiner DIR] [--lora DIR] [--controlnet DIR]
[--upscaler DIR] [--latent-upscaler DIR]`` writes ``save_pretrained`` folders that
:mod:`ferry_sdxl.models` loads like any local model. The dimensions fit together
(docs/ml-workers.md): UNet (32, 64) with ``text_time`` added conditioning, a two-level VAE, two
CLIP text encoders of width 32 and a CLIP BPE tokenizer over a byte-level vocabulary; the
ControlNet is made from the UNet (``ControlNetModel.from_unet``). The upscalers are diffusers'
x4 upscaler (``StableDiffusionUpscalePipeline``: a UNet taking the latents and the low-res
image, 7 channels, with the noise level as its class label; a three-level VAE, 4x) and the x2
latent upscaler (``StableDiffusionLatentUpscalePipeline``: a K-diffusion UNet of four levels
taking the latents and the image's latents, 8 channels), each with one CLIP text encoder.
Two steps at 64x64 run in well under a second on a CPU once loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionLatentUpscalePipeline,
    StableDiffusionUpscalePipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

TEXT_WIDTH = 32
VOCAB_SIZE = 1000
MERGES = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("c", "a"), ("ca", "t</w>")]


def _byte_chars() -> list[str]:
    """GPT-2's reversible byte-to-unicode table (what CLIP's BPE works over)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    by_byte = dict(zip(order, chars, strict=True))
    return [chr(by_byte[b]) for b in range(256)]


def write_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer: the byte characters, their ``</w>`` forms, a few merges."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = _byte_chars()
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(pair) for pair in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n"
    (folder / "merges.txt").write_text(merges, encoding="utf-8")


def _text_config() -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_size=TEXT_WIDTH,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=3,
        projection_dim=TEXT_WIDTH,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=77,
        hidden_act="gelu",
        # 2 selects the original CLIP rule (end of text = the highest id), which holds here.
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )


def build_pipeline(seed: int = 0) -> Any:
    """A ``StableDiffusionXLPipeline`` of tiny modules with random weights drawn from ``seed``."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + TEXT_WIDTH,
        cross_attention_dim=2 * TEXT_WIDTH,
        norm_num_groups=1,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=128,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    text_encoder = CLIPTextModel(_text_config())
    text_encoder_2 = CLIPTextModelWithProjection(_text_config())
    tokenizer, tokenizer_2 = _tokenizer(), _tokenizer()
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


def save_pipeline(folder: Path, seed: int = 0) -> Path:
    """Builds the tiny pipeline and ``save_pretrained``s it into ``folder``."""
    build_pipeline(seed).save_pretrained(str(folder))
    return folder


def save_lora(pipeline_dir: Path, folder: Path, seed: int = 1, rank: int = 4) -> Path:
    """A LoRA for the tiny UNet's attention layers (random, non-zero), in diffusers' format."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(str(pipeline_dir), subfolder="unet")
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        init_lora_weights=False,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    unet.add_adapter(config)
    layers = get_peft_model_state_dict(unet)
    StableDiffusionXLPipeline.save_lora_weights(str(folder), unet_lora_layers=layers)
    return folder


def save_controlnet(
    pipeline_dir: Path,
    folder: Path,
    seed: int = 3,
    embedding_channels: tuple[int, ...] = (16, 32),
) -> Path:
    """A ControlNet for the tiny pipeline: ``ControlNetModel.from_unet`` of its UNet.

    ``embedding_channels`` are the control image embedding's widths; each level after the
    first halves the image, so the default two levels shrink it 2x, to the tiny VAE's latent
    size (SDXL's four levels shrink it 8x). A new ControlNet's output convolutions (and the
    embedding's last one) start at zero, which would make it change nothing; here they get
    random weights, as training gives them, so that the control image steers the output."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(str(pipeline_dir), subfolder="unet")
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=embedding_channels
    )
    zeroed = [
        (controlnet.controlnet_cond_embedding.conv_out, 0.5),  # how much the image counts
        *((block, 0.1) for block in controlnet.controlnet_down_blocks),
        (controlnet.controlnet_mid_block, 0.1),
    ]
    with torch.no_grad():
        for module, std in zeroed:
            for parameter in module.parameters():
                parameter.normal_(0.0, std)
    controlnet.save_pretrained(str(folder))
    return folder


def _tokenizer() -> Any:
    """The CLIP BPE tokenizer of :func:`write_tokenizer`, loaded as a real one is."""
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=77)


# The x4 upscaler's VAE latents are scaled by this (its released config; the pipeline resets
# any other value to it, with a deprecation warning).
X4_VAE_SCALING = 0.08333


def build_upscaler(seed: int = 5) -> Any:
    """A ``StableDiffusionUpscalePipeline`` (x4) of tiny modules with random weights.

    As in the released x4 upscaler: the UNet takes 7 channels, the 4 latent channels and the 3
    of the low-res image it is conditioned on, at the low-res image's size, and the noise
    level added to that image as its class label (``num_class_embeds`` 1000, above the
    pipeline's ``max_noise_level`` 350); the VAE has three levels, so it decodes the latents
    4x larger, with the x4 VAE's scaling factor; the low-res image is noised with a DDPM
    scheduler, the latents denoised with DDIM and v-prediction."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=TEXT_WIDTH,
        norm_num_groups=1,
        num_class_embeds=1000,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        sample_size=128,
        scaling_factor=X4_VAE_SCALING,
    )
    low_res_scheduler = DDPMScheduler(
        beta_start=0.0001, beta_end=0.02, beta_schedule="scaled_linear", clip_sample=False
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
    )
    return StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_text_config()),
        tokenizer=_tokenizer(),
        unet=unet,
        low_res_scheduler=low_res_scheduler,
        scheduler=scheduler,
        max_noise_level=350,
    )


def save_upscaler(folder: Path, seed: int = 5) -> Path:
    """Builds the tiny x4 upscaler and ``save_pretrained``s it into ``folder``."""
    build_upscaler(seed).save_pretrained(str(folder))
    return folder


def build_latent_upscaler(seed: int = 6) -> Any:
    """A ``StableDiffusionLatentUpscalePipeline`` (x2) of tiny modules with random weights.

    As in the released x2 latent upscaler: a K-diffusion UNet (``KDownBlock2D`` and
    ``KCrossAttnDownBlock2D``, Fourier time embedding, no middle block) taking 8 channels, the
    latents and the low-res image's latents (encoded by the pipeline's VAE, enlarged 2x), and
    predicting 5 (the pipeline drops the last); its time condition is 64 ones, 64 zeros (the
    noise level) and the text encoder's pooled output, so ``time_cond_proj_dim`` is 128 plus
    the text width. Four levels (with two, the K up blocks' widths do not match up); a
    two-level VAE."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        act_fn="gelu",
        attention_head_dim=8,
        norm_num_groups=None,
        block_out_channels=(32, 32, 64, 64),
        time_cond_proj_dim=128 + TEXT_WIDTH,
        conv_in_kernel=1,
        conv_out_kernel=1,
        cross_attention_dim=TEXT_WIDTH,
        down_block_types=(
            "KDownBlock2D",
            "KCrossAttnDownBlock2D",
            "KCrossAttnDownBlock2D",
            "KCrossAttnDownBlock2D",
        ),
        in_channels=8,
        mid_block_type=None,
        only_cross_attention=False,
        out_channels=5,
        resnet_time_scale_shift="scale_shift",
        time_embedding_type="fourier",
        timestep_post_act="gelu",
        up_block_types=(
            "KCrossAttnUpBlock2D",
            "KCrossAttnUpBlock2D",
            "KCrossAttnUpBlock2D",
            "KUpBlock2D",
        ),
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        sample_size=64,
    )
    return StableDiffusionLatentUpscalePipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_text_config()),
        tokenizer=_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(prediction_type="sample"),
    )


def save_latent_upscaler(folder: Path, seed: int = 6) -> Path:
    """Builds the tiny x2 latent upscaler and ``save_pretrained``s it into ``folder``."""
    build_latent_upscaler(seed).save_pretrained(str(folder))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferry_sdxl.tiny", description=__doc__)
    parser.add_argument("base", type=Path, nargs="?", help="folder for the base pipeline")
    parser.add_argument("--refiner", type=Path, help="folder for a second (refiner) pipeline")
    parser.add_argument("--lora", type=Path, help="folder for a LoRA of the base UNet")
    parser.add_argument("--controlnet", type=Path, help="folder for a ControlNet of the base")
    parser.add_argument("--upscaler", type=Path, help="folder for an x4 upscaler")
    parser.add_argument("--latent-upscaler", type=Path, help="folder for an x2 latent upscaler")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    needs_base = [f"--{n}" for n in ("refiner", "lora", "controlnet") if getattr(args, n)]
    if args.base is None and (needs_base or not (args.upscaler or args.latent_upscaler)):
        parser.error(
            f"the base folder is required{' with ' + ', '.join(needs_base) if needs_base else ''}"
        )
    if args.base is not None:
        save_pipeline(args.base, args.seed)
    if args.refiner is not None:
        save_pipeline(args.refiner, args.seed + 1)
    if args.lora is not None:
        save_lora(args.base, args.lora, args.seed + 2)
    if args.controlnet is not None:
        save_controlnet(args.base, args.controlnet, args.seed + 3)
    if args.upscaler is not None:
        save_upscaler(args.upscaler, args.seed + 5)
    if args.latent_upscaler is not None:
        save_latent_upscaler(args.latent_upscaler, args.seed + 6)
    for folder in (args.base, args.upscaler, args.latent_upscaler):
        if folder is not None:
            print(folder, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
