"""Structured output and tool calls against a running `ferrite serve`, with the official OpenAI
Python SDK (pydantic, which the SDK depends on, validates the answers).

Usage: tools_client.py BASE_URL MODEL [gemma]
With `gemma` only the named-function check runs (the base model serves the generic format).
Exits non-zero with a message on the first failed check.
"""
import json
import sys

from openai import OpenAI
from pydantic import BaseModel, Field

from checks import check

base, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)


def tool(name, description, **props):
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": props, "required": list(props),
                       "additionalProperties": False}}}


city = {"type": "string", "maxLength": 30}
weather = tool("get_weather", "Get the current weather in a city", city=city)
clock = tool("get_time", "Get the local time in a city", city=city)
ask = [{"role": "user", "content": "What is the weather in Paris?"}]


def calls_of(choice):
    return [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []]


if len(sys.argv) > 3 and sys.argv[3] == "gemma":
    r = client.chat.completions.create(
        model=model, messages=ask, max_tokens=60, temperature=0, tools=[weather, clock],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    c = r.choices[0]
    check(c.finish_reason == "tool_calls" and c.message.content is None, f"gemma named call: {c}")
    got = calls_of(c)
    check(len(got) == 1 and got[0][0] == "get_weather" and isinstance(got[0][1]["city"], str),
          f"gemma called get_weather with a city: {got}")
    sys.exit(0)


# JSON schema answers validate, 20 seeds at temperature 1.0.
class City(BaseModel):
    name: str = Field(max_length=24)
    country: str = Field(max_length=24)
    population: int = Field(ge=0, le=10**9)
    capital: bool


schema = City.model_json_schema()
for seed in range(20):
    r = client.chat.completions.create(
        model=model, temperature=1.0, seed=seed, max_tokens=200,
        messages=[{"role": "user", "content": "Describe a city as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}})
    c = r.choices[0]
    check(c.finish_reason == "stop", f"seed {seed}: the document finished ({c.finish_reason})")
    City.model_validate_json(c.message.content)
check(True, "20 seeds at temperature 1.0 gave valid City documents")

# The SDK's own structured-output helper parses into the model.
p = client.chat.completions.parse(model=model, messages=[{"role": "user", "content": "Paris as JSON"}],
                                  response_format=City, max_tokens=200, temperature=0)
check(isinstance(p.choices[0].message.parsed, City), f"parse() gives a City: {p.choices[0].message.parsed}")

# tool_choice required, named, auto.
r = client.chat.completions.create(model=model, messages=ask, max_tokens=80, temperature=0,
                                   tools=[weather, clock], tool_choice="required")
c = r.choices[0]
check(c.finish_reason == "tool_calls" and c.message.content is None, f"required: {c}")
check(calls_of(c)[0][0] in ("get_weather", "get_time"), f"required call: {calls_of(c)}")
unary = c.message.tool_calls

r = client.chat.completions.create(model=model, messages=ask, max_tokens=80, temperature=0,
                                   tools=[weather, clock],
                                   tool_choice={"type": "function", "function": {"name": "get_time"}})
got = calls_of(r.choices[0])
check(len(got) == 1 and got[0][0] == "get_time", f"named function: {got}")

r = client.chat.completions.create(model=model, messages=ask, max_tokens=80, temperature=0,
                                   tools=[weather, clock], tool_choice="auto")
c = r.choices[0]
check(c.finish_reason in ("stop", "tool_calls"), f"auto: {c.finish_reason}")
if c.finish_reason == "tool_calls":
    calls_of(c)
else:
    check(c.message.content, "auto answered in text")

# Streamed tool-call deltas reassemble to the unary answer (greedy).
stream = client.chat.completions.create(model=model, messages=ask, max_tokens=80, temperature=0,
                                        tools=[weather, clock], tool_choice="required", stream=True)
calls, finish = {}, None
for ch in stream:
    for cc in ch.choices:
        for d in cc.delta.tool_calls or []:
            if d.id:
                calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
            if d.function and d.function.arguments:
                calls[d.index]["arguments"] += d.function.arguments
        finish = cc.finish_reason or finish
streamed = [(calls[i]["name"], calls[i]["arguments"]) for i in sorted(calls)]
check(streamed == [(t.function.name, t.function.arguments) for t in unary],
      f"streamed calls equal the unary ones: {streamed}")
check(finish == "tool_calls", "streamed finish_reason tool_calls")

# Two parallel calls (an earlier turn shows the model how).
history = [
    {"role": "user", "content": "What is the weather in Oslo and in Madrid?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Madrid"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "-3 C"},
    {"role": "tool", "tool_call_id": "c2", "content": "21 C"},
    {"role": "assistant", "content": "Oslo is at -3 C and Madrid at 21 C."},
    {"role": "user", "content": "What is the weather in Paris and in Rome?"},
]
r = client.chat.completions.create(model=model, messages=history, max_tokens=120, temperature=0,
                                   tools=[weather], tool_choice="required", parallel_tool_calls=True)
got = calls_of(r.choices[0])
check(len(got) == 2 and {g[1]["city"] for g in got} == {"Paris", "Rome"}, f"two parallel calls: {got}")
ids = [t.id for t in r.choices[0].message.tool_calls]
check(len(set(ids)) == 2, f"each call has its own id: {ids}")

# A full round trip: the call and its result go back, the model answers in text.
first = client.chat.completions.create(model=model, messages=ask, max_tokens=80, temperature=0,
                                       tools=[weather], tool_choice="required")
call = first.choices[0].message.tool_calls[0]
msgs = ask + [
    {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
    {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
]
final = client.chat.completions.create(model=model, messages=msgs, max_tokens=40, temperature=0,
                                       tools=[weather], tool_choice="none")
c = final.choices[0]
check(c.finish_reason in ("stop", "length") and c.message.content and not c.message.tool_calls,
      f"answer after the tool result: {c.message.content!r}")
