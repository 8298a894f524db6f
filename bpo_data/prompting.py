"""The LLaVA-1.5 prompt layout, built in one place for every engine.

llava-hf checkpoints render a conversation as ``USER: <image>\\n{q1} ASSISTANT: {a1} USER: {q2} ASSISTANT:``
(their chat template). Generation (hf and vllm engines) and training (TRL applies the processor's
chat template) must see the same string, so both use the layout defined here, and the smoke model
ships a chat template that renders it.
"""

from __future__ import annotations

IMAGE_TOKEN = "<image>"

# Renders structured or plain-string messages exactly like ``llava_prompt`` below. Written for
# this project; it follows the layout of the llava-hf/llava-1.5 checkpoints' own template.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}"
    "{{ message['content'] + ' ' }}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}"
    "{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ content['text'] + ' ' }}{% endgeneration %}"
    "{% else %}{{ content['text'] + ' ' }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def strip_image_marker(text: str) -> str:
    """Remove the ``<image>`` placeholder wherever a source put it (start or end, with or without newline)."""
    return text.replace(IMAGE_TOKEN, "").strip()


def llava_prompt(messages: list[dict[str, str]], with_image: bool = True) -> str:
    """Render user/assistant messages (plain-string content) ending with a user turn.

    The image marker goes at the start of the first user turn, as in LLaVA-1.5 training data.
    """
    parts: list[str] = []
    image_pending = with_image
    for message in messages:
        role = message["role"]
        text = message["content"]
        if role == "system":
            parts.append(text + " ")
            continue
        if role == "user" and image_pending:
            text = f"{IMAGE_TOKEN}\n{text}"
            image_pending = False
        parts.append(f"{role.upper()}: {text} ")
    return "".join(parts) + "ASSISTANT:"


def llava_text_prompt(system: str, user: str) -> str:
    """A text-only request to the MLLM's own language model (error injection, as in the paper)."""
    messages = [{"role": "user", "content": f"{system}\n\n{user}" if system else user}]
    return llava_prompt(messages, with_image=False)
