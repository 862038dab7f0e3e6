"""Drive the official OpenAI Python SDK against crs: chat.completions, streamed and not, with
and without tools. Prints one JSON object with what the SDK parsed.

usage: openai_chat.py BASE_URL API_KEY MODEL
"""

import json
import sys

from openai import OpenAI

base, key, model = sys.argv[1:4]
client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)
messages = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]
tools = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather in a city now",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
out = {}

r = client.chat.completions.create(model=model, messages=messages, max_tokens=64)
out["plain"] = {
    "content": r.choices[0].message.content,
    "finish_reason": r.choices[0].finish_reason,
    "prompt_tokens": r.usage.prompt_tokens,
    "completion_tokens": r.usage.completion_tokens,
}

r = client.chat.completions.create(
    model=model, messages=messages, max_tokens=64, tools=tools, tool_choice="auto"
)
out["tools"] = {
    "content": r.choices[0].message.content,
    "finish_reason": r.choices[0].finish_reason,
}

text, usage, finish = [], None, None
stream = client.chat.completions.create(
    model=model,
    messages=messages,
    max_tokens=64,
    stream=True,
    stream_options={"include_usage": True},
    tools=tools,
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
    for c in chunk.choices:
        if c.delta.content:
            text.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
out["stream"] = {"content": "".join(text), "finish_reason": finish, "completion_tokens": usage}

print(json.dumps(out))
