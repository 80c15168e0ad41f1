"""Any timm or torchvision image classifier by name, adapted to small images (32x32 CIFAR, 8x8 digits).

The adaptation is the usual one for CIFAR-sized inputs (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016, section 4.2 trains ResNets on 32x32 with a 3x3 stride-1 first convolution and no
max-pool): the first convolution becomes 3x3 with stride 1 (keeping its width and input channels) and a
max-pool directly after the stem is removed, so that an 8x8 or 32x32 image is not reduced to 1x1 before the
first block. Vision transformers are built for the image size instead (``img_size`` and a small
``patch_size``); their position embeddings are resampled by timm when pretrained weights come from another
size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

#: Libraries a model name may be prefixed with: ``"timm:resnet18"``, ``"torchvision:resnet18"``.
MODEL_SOURCES = ("timm", "torchvision")


def _split_name(name: str) -> tuple[str, str]:
    source, sep, model_name = name.partition(":")
    if not sep:
        return "timm", name
    if source not in MODEL_SOURCES:
        raise ValueError(f"`name` prefix must be one of {MODEL_SOURCES} (as in 'timm:resnet18'), got {name!r}.")
    return source, model_name


def _is_transformer(model: nn.Module) -> bool:
    return hasattr(model, "patch_embed")


def _small_image_stem(model: nn.Module) -> nn.Module:
    """A downsampling first conv -> 3x3 stride 1 (same channels); a max-pool before the next conv -> identity."""
    names = [(name, module) for name, module in model.named_modules() if name]
    index = next((i for i, (_, m) in enumerate(names) if isinstance(m, nn.Conv2d)), None)
    if index is None:
        return model
    conv_name, conv = names[index]
    assert isinstance(conv, nn.Conv2d)
    if conv.stride == (1, 1) and conv.kernel_size == (3, 3):
        return model  # already a CIFAR-style stem (e.g. VGG): its pools belong to the blocks, keep everything
    new_conv = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=conv.bias is not None)
    _set_submodule(model, conv_name, new_conv)
    for name, module in names[index + 1 :]:
        if isinstance(module, nn.Conv2d):
            break  # the stem ended without a pool
        if isinstance(module, nn.MaxPool2d):
            _set_submodule(model, name, nn.Identity())
            break
    return model


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def build_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int | tuple[int, int] = 32,
    weights_path: str | Path | None = None,
    adapt: bool = True,
    **model_kwargs: Any,
) -> nn.Module:
    """A timm or torchvision classifier by name, with ``num_classes`` outputs, adapted to small images.

    Args:
        name: a timm model name (``"resnet18"``, ``"vit_small_patch16_224"``), or prefixed by its library:
            ``"timm:mobilenetv2_100"``, ``"torchvision:resnet18"``.
        num_classes: classifier outputs.
        in_channels: image channels (3 for CIFAR, 1 for digits).
        image_size: ``H`` or ``(H, W)``; used by transformers (timm ``img_size``).
        weights_path: a local pretrained weights file (a state dict: ``.pth``/``.bin``/``.safetensors``).
            timm models load it through timm's own pretrained path (its checkpoint filter resamples a
            ViT's position embeddings and the classifier is re-initialised for ``num_classes``);
            torchvision models load every tensor whose name and shape match and re-initialise the rest.
            Nothing is ever downloaded.
        adapt: apply the small-image stem (module docstring); transformers are never re-stemmed.
        model_kwargs: passed to the constructor (e.g. ``channels=(16, 32, 64, 128)`` for a narrow timm
            ResNet, ``patch_size=4, depth=6`` for a ViT).

    Returns:
        the model; ``model(x)`` maps ``[N, in_channels, H, W]`` to ``[N, num_classes]``.

    Example:
        >>> import torch
        >>> net = build_model("resnet18", num_classes=100, in_channels=1, channels=(8, 16, 32, 64))
        >>> net(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 100])
    """
    source, model_name = _split_name(name)
    if weights_path is not None and not Path(weights_path).is_file():
        raise FileNotFoundError(f"`weights_path` {str(weights_path)!r} is not a file (a local state-dict file).")
    if source == "timm":
        model = _build_timm(model_name, num_classes, in_channels, image_size, weights_path, **model_kwargs)
    else:
        model = _build_torchvision(model_name, num_classes, in_channels, weights_path, **model_kwargs)
    if adapt and not _is_transformer(model):
        model = _small_image_stem(model)
    return model


def _build_timm(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int | tuple[int, int],
    weights_path: str | Path | None,
    **model_kwargs: Any,
) -> nn.Module:
    import timm

    if name not in timm.list_models():
        raise ValueError(f"`name` {name!r} is not a timm model (see timm.list_models()).")
    kwargs: dict[str, Any] = dict(num_classes=num_classes, in_chans=in_channels, **model_kwargs)
    probe = timm.create_model(name, pretrained=False, num_classes=1, **model_kwargs)
    if _is_transformer(probe):
        kwargs.setdefault("img_size", image_size)
    del probe
    if weights_path is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    overlay = dict(file=str(weights_path), hf_hub_id=None, url=None)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


def _build_torchvision(
    name: str, num_classes: int, in_channels: int, weights_path: str | Path | None, **model_kwargs: Any
) -> nn.Module:
    import torch
    import torchvision

    if name not in torchvision.models.list_models():
        raise ValueError(f"`name` {name!r} is not a torchvision model (see torchvision.models.list_models()).")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **model_kwargs)
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first[1].in_channels != in_channels:
        conv_name, conv = first
        assert isinstance(conv, nn.Conv2d)
        replacement = nn.Conv2d(
            in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            conv.padding,  # type: ignore[arg-type]
            bias=conv.bias is not None,
        )
        _set_submodule(model, conv_name, replacement)
    if weights_path is not None:
        if str(weights_path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(weights_path))
        else:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        own = model.state_dict()
        matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not matching:
            raise ValueError(f"no tensor in {str(weights_path)!r} matches torchvision {name!r} by name and shape.")
        model.load_state_dict(matching, strict=False)
    return model
