"""An action's log lines reach the invoking client over the WebSocket as they are logged,
not only with the action's next change of state; a burst of lines costs one
notification, and each notification carries only its new lines."""

from __future__ import annotations

import trio
import trio.testing

import trio_things as tt
from trio_things.client import State
from trio_things.testing import serve_in_memory


class Furnace(tt.Thing):
    """Logs its progress, then waits to be told to finish."""

    def __init__(self) -> None:
        super().__init__()
        self.finish = trio.Event()

    @tt.action
    async def heat(self, context: tt.ActionContext) -> str:
        context.log("heating")
        await self.finish.wait()
        for step in range(3):  # a burst, logged with no checkpoint in between
            context.log(f"step {step}")
        await self.finish.wait()
        return "hot"

    @tt.action
    def heat_in_a_thread(self, context: tt.ActionContext) -> str:
        context.log("heating in a thread")
        trio.from_thread.run(self.finish.wait)
        return "hot"


async def test_a_line_arrives_while_the_action_runs() -> None:
    furnace = Furnace()
    with trio.fail_after(10):
        async with serve_in_memory(furnace) as served, served.connect() as thing:
            invocation = await thing.invoke("heat")  # over the WebSocket
            updates = invocation.updates()
            async for status in updates:
                if status.log:
                    break
            assert status.state is State.RUNNING  # the line came before any end
            assert [line.message for line in status.log] == ["heating"]
            furnace.finish.set()
            final = [status async for status in updates][-1]
            assert final.state is State.COMPLETED
            assert [line.message for line in final.log] == [
                "heating", "step 0", "step 1", "step 2"]


async def test_a_line_from_a_worker_thread_arrives_while_the_action_runs() -> None:
    furnace = Furnace()
    with trio.fail_after(10):
        async with serve_in_memory(furnace) as served, served.connect() as thing:
            invocation = await thing.invoke("heat_in_a_thread")
            updates = invocation.updates()
            async for status in updates:
                if status.log:
                    break
            assert status.state is State.RUNNING
            assert [line.message for line in status.log] == ["heating in a thread"]
            furnace.finish.set()
            assert (await invocation.result()) == "hot"


async def test_a_burst_is_one_notification_with_only_its_new_lines() -> None:
    """Over the raw Web Thing Protocol: what the server sends for the invocation."""
    import json

    furnace = Furnace()
    with trio.fail_after(10):
        async with serve_in_memory(furnace) as served, served.websocket(
                "/furnace/ws", subprotocols=["webthingprotocol"]) as ws:
            await ws.send_message(json.dumps({
                "messageID": "1", "messageType": "request", "operation": "invokeaction",
                "name": "heat", "input": {}}))
            seen = []
            while not any(m.get("status", {}).get("log") for m in seen):
                seen.append(json.loads(await ws.get_message()))
            first_log = seen[-1]["status"]
            assert first_log["logFrom"] == 0
            assert [line["message"] for line in first_log["log"]] == ["heating"]
            furnace.finish.set()
            after = []
            while not after or after[-1]["status"]["state"] != "completed":
                after.append(json.loads(await ws.get_message()))
    with_lines = [m["status"] for m in after if m["status"].get("log")]
    assert len(with_lines) == 1  # the burst of three: one notification
    assert with_lines[0]["logFrom"] == 1
    assert [line["message"] for line in with_lines[0]["log"]] == ["step 0", "step 1",
                                                                  "step 2"]
