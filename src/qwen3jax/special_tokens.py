"""The Qwen3 special tokens (SPEC §5) that every tokenizer of the project maps to single ids."""

ENDOFTEXT = "<|endoftext|>"  # end of document and padding; no BOS exists
# The ones the chat template emits.
CHAT_TEMPLATE_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)
SPECIAL_TOKENS = (ENDOFTEXT, *CHAT_TEMPLATE_TOKENS)
