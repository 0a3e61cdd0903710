"""Labelling configs: the one juicer writes for its own project, and reading any project's image-choices config.

The names in juicer's own config live here and nowhere else (:data:`CHOICES_NAME`, :data:`IMAGE_NAME`). A
project that is not juicer's (Label Studio asking juicer as its ML backend) names its controls as it likes:
:func:`parse_label_config` reads them from the XML, so predictions and labels use the project's own names.
Pure functions; no Label Studio server involved.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from xml.sax.saxutils import quoteattr

from annotation.errors import ProjectConfigError

#: Names in juicer's own labelling config: the Choices control and the Image object it labels.
CHOICES_NAME = "label"
IMAGE_NAME = "image"
#: The task data key juicer's own tasks keep the image URL in (``value="$image"``).
IMAGE_KEY = "image"


@dataclass(frozen=True)
class ChoicesConfig:
    """An image-classification labelling config: one ``Image`` object and one ``Choices`` control over it.

    ``image_key`` is the task data key the image URL is read from (``value="$image"`` -> ``image``).
    """

    image_name: str
    image_key: str
    choices_name: str
    choices: tuple[str, ...]

    def result(self, label: str) -> list[dict[str, Any]]:
        """A prediction or annotation ``result`` choosing ``label``."""
        return [
            {"from_name": self.choices_name, "to_name": self.image_name, "type": "choices", "value": {"choices": [label]}}
        ]


#: juicer's own project, as :func:`label_config` writes it (its choices vary: the project's classes).
JUICER_CONFIG = ChoicesConfig(IMAGE_NAME, IMAGE_KEY, CHOICES_NAME, ())


def label_config(classes: Sequence[str]) -> str:
    """juicer's labelling config: one image and a single-choice list over ``classes`` (in order)."""
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
    return (
        f'<View><Image name="{IMAGE_NAME}" value="${IMAGE_KEY}"/>'
        f'<Choices name="{CHOICES_NAME}" toName="{IMAGE_NAME}" choice="single-radio" showInLine="true">'
        f"{choices}</Choices></View>"
    )


def parse_label_config(xml: Any) -> ChoicesConfig:
    """The Image and Choices of a labelling config; :class:`ProjectConfigError` saying what is wrong otherwise.

    juicer classifies whole images: the config must hold exactly one ``Choices`` control whose ``toName`` is an
    ``Image`` object with a ``$variable`` value. Other tags (headers, text, layout) are ignored.
    """
    if not isinstance(xml, str) or not xml.strip():
        raise ProjectConfigError("the request carries no labelling config (label_config / schema is empty)")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise ProjectConfigError(f"the labelling config is not valid XML ({exc})") from exc
    images = {tag.get("name"): tag for tag in root.iter() if tag.tag == "Image" and tag.get("name")}
    controls = [tag for tag in root.iter() if tag.tag == "Choices"]
    if len(controls) != 1:
        raise ProjectConfigError(
            f"juicer classifies whole images: the labelling config needs exactly one <Choices>, it has {len(controls)}"
        )
    control = controls[0]
    image = images.get(control.get("toName") or "")
    if image is None:
        raise ProjectConfigError(
            f"the <Choices name={control.get('name')!r}> labels {control.get('toName')!r}, which is not an <Image> "
            "of the config: juicer predicts choices for one image"
        )
    value = image.get("value") or ""
    if not value.startswith("$") or len(value) < 2:
        raise ProjectConfigError(f"the <Image name={image.get('name')!r}> needs value=\"$key\" (the task data key), not {value!r}")
    # An alias, when given, is what results store instead of the value.
    choices = tuple(str(tag.get("alias") or tag.get("value") or "") for tag in control.iter() if tag.tag == "Choice")
    if not choices or any(not c for c in choices):
        raise ProjectConfigError(f"the <Choices name={control.get('name')!r}> needs <Choice value=...> entries")
    return ChoicesConfig(str(image.get("name")), value[1:], str(control.get("name")), choices)


def chosen_label(result: Any, choices_name: str | None = None) -> str | None:
    """The class chosen in a ``result`` list (``choices_name``'s region, else the first choices region), or None."""
    if not isinstance(result, list):
        return None
    for region in result:
        if not isinstance(region, Mapping):
            continue
        named = region.get("from_name") == (choices_name or CHOICES_NAME)
        if not named and (choices_name is not None or region.get("type") != "choices"):
            continue
        value = region.get("value")
        choices = value.get("choices") if isinstance(value, Mapping) else None
        if isinstance(choices, list) and choices and isinstance(choices[0], str):
            return choices[0]
    return None
