"""A tiny SDXL pipeline with random weights, built locally (no hub access), for tests and demos.

``python -m ferry_worker.ml.tiny DIR [--refiner DIR] [--lora DIR] [--controlnet DIR]`` writes
``save_pretrained`` folders that :mod:`ferry_worker.ml.models` loads like any local SDXL model.
The dimensions fit together (docs/ml-workers.md): UNet (32, 64) with ``text_time`` added
conditioning, a two-level VAE, two CLIP text encoders of width 32 and a CLIP BPE tokenizer over
a byte-level vocabulary; the ControlNet is made from the UNet (``ControlNetModel.from_unet``).
Two steps at 64x64 run in well under a second on a CPU once loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    EulerDiscreteScheduler,
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
    import tempfile

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
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
        tokenizer_2 = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferry_worker.ml.tiny", description=__doc__)
    parser.add_argument("base", type=Path, help="folder for the base pipeline")
    parser.add_argument("--refiner", type=Path, help="folder for a second (refiner) pipeline")
    parser.add_argument("--lora", type=Path, help="folder for a LoRA of the base UNet")
    parser.add_argument("--controlnet", type=Path, help="folder for a ControlNet of the base")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    save_pipeline(args.base, args.seed)
    if args.refiner is not None:
        save_pipeline(args.refiner, args.seed + 1)
    if args.lora is not None:
        save_lora(args.base, args.lora, args.seed + 2)
    if args.controlnet is not None:
        save_controlnet(args.base, args.controlnet, args.seed + 3)
    print(args.base, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
