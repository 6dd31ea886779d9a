"""Real agent frameworks against a running `ferrite serve`: a pydantic-ai agent with one function
tool and a typed output, and an openai-agents run (chat-completions mode, streamed) with a strict
tool. Each must finish: its tool called with valid arguments, its final output typed.

Usage: agents_client.py BASE_URL MODEL
"""
import asyncio
import sys

from pydantic import BaseModel, Field

from checks import check

base, model = sys.argv[1], sys.argv[2]


class Forecast(BaseModel):
    city: str = Field(max_length=30)
    celsius: int = Field(ge=-60, le=60)


calls = []


def pydantic_ai_agent():
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.settings import ModelSettings

    m = OpenAIChatModel(model, provider=OpenAIProvider(base_url=base + "/v1", api_key="none"))
    agent = Agent(m, output_type=Forecast, model_settings=ModelSettings(temperature=0, max_tokens=120),
                  system_prompt="First call get_temperature, then give the forecast.")

    # A 135M model would call the tool forever: once it has run, the agent offers only the
    # typed answer (pydantic-ai's per-step tool preparation).
    async def once(ctx, tool_def):
        return None if any(c[0] == "pydantic-ai" for c in calls) else tool_def

    @agent.tool_plain(prepare=once)
    def get_temperature(city: str) -> int:
        """The temperature in a city, in degrees Celsius."""
        calls.append(("pydantic-ai", city))
        return 18

    r = agent.run_sync("Call get_temperature for Paris, then give the forecast.")
    check(isinstance(r.output, Forecast), f"pydantic-ai typed output: {r.output!r}")
    check(any(c[0] == "pydantic-ai" for c in calls), f"pydantic-ai called the tool: {calls}")


async def openai_agents_run():
    import dataclasses

    from agents import (Agent, AgentHooks, ModelSettings, OpenAIChatCompletionsModel, Runner,
                        function_tool, set_tracing_disabled)
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0)

    @function_tool(strict_mode=True)
    def get_temperature(city: str) -> int:
        """The temperature in a city, in degrees Celsius."""
        calls.append(("openai-agents", city))
        return 18

    class AnswerAfterTheTool(AgentHooks):
        """A 135M model would call the tool forever: once it has run, tool_choice is none."""

        async def on_tool_end(self, context, agent, tool, result):
            agent.model_settings = dataclasses.replace(agent.model_settings, tool_choice="none")

    agent = Agent(
        name="forecaster",
        instructions="Use the tool to find the temperature, then give the forecast.",
        model=OpenAIChatCompletionsModel(model=model, openai_client=client),
        model_settings=ModelSettings(temperature=0, max_tokens=120, tool_choice="required"),
        tools=[get_temperature],
        output_type=Forecast,
        hooks=AnswerAfterTheTool(),
        reset_tool_choice=False,
    )
    r = Runner.run_streamed(agent, "What is the forecast for Paris?", max_turns=6)
    events = 0
    async for _ in r.stream_events():
        events += 1
    check(isinstance(r.final_output, Forecast), f"openai-agents typed output: {r.final_output!r}")
    check(any(c[0] == "openai-agents" for c in calls), f"openai-agents called the tool: {calls}")
    check(events > 0, f"openai-agents streamed {events} events")


pydantic_ai_agent()
asyncio.run(openai_agents_run())
