"""Reading any project's image-choices labelling config, and juicer's own."""

from __future__ import annotations

import pytest

from annotation.errors import ProjectConfigError
from annotation.labelconfig import CHOICES_NAME, IMAGE_NAME, chosen_label, label_config, parse_label_config


def test_juicers_own_config_reads_back_with_its_names():
    config = parse_label_config(label_config(["cat", "it's"]))
    assert (config.image_name, config.image_key, config.choices_name) == (IMAGE_NAME, "image", CHOICES_NAME)
    assert config.choices == ("cat", "it's")


def test_a_foreign_config_keeps_its_names_and_aliases():
    config = parse_label_config(
        '<View><Image name="photo" value="$url"/><Text name="t" value="$x"/>'
        '<Choices name="kind" toName="photo"><Choice value="Cat" alias="cat"/><Choice value="dog"/></Choices></View>'
    )
    assert (config.image_name, config.image_key, config.choices_name, config.choices) == ("photo", "url", "kind", ("cat", "dog"))
    assert config.result("dog")[0] == {"from_name": "kind", "to_name": "photo", "type": "choices", "value": {"choices": ["dog"]}}


@pytest.mark.parametrize(
    "xml, says",
    [
        ("", "no labelling config"),
        ("<View><Image", "not valid XML"),
        ('<View><Image name="i" value="$i"/></View>', "exactly one <Choices>"),
        ('<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>', "not an <Image>"),
        ('<View><Image name="i" value="http://x"/><Choices name="c" toName="i"><Choice value="a"/></Choices></View>', "$key"),
    ],
)
def test_configs_juicer_cannot_use_say_why(xml, says):
    with pytest.raises(ProjectConfigError, match=None) as raised:
        parse_label_config(xml)
    assert says in str(raised.value)


def test_chosen_label_reads_the_named_or_the_first_choices_region():
    result = [{"from_name": "kind", "type": "choices", "value": {"choices": ["dog"]}}]
    assert chosen_label(result) == "dog"
    assert chosen_label(result, "kind") == "dog" and chosen_label(result, "other") is None
    assert chosen_label([]) is None and chosen_label(None) is None
