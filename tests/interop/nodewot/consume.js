#!/usr/bin/env node
// Eclipse node-wot 0.9.2 as the consumer of a running `trio-things serve` (demo Things).
//
//     node consume.js http://127.0.0.1:PORT/
//
// Client side only: a Servient with node-wot's HttpClientFactory, no server. It explores
// the server's Thing Description Directory at <base>/.well-known/wot (WoT Discovery,
// WoT.exploreDirectory), fetches and consumes <base>/counter/ and <base>/thermometer/,
// then reads, writes, invokes,
// observes and subscribes through node-wot's ordinary scripting API. Each step prints
// one JSON line on stdout ({"step": ..., ...} on success, {"step": ..., "error": ...} on
// failure); the last line is {"ok": true} or {"ok": false, "failed": [...]}, and the
// exit status is 0 only when every step passed. A failed step does not stop the later
// ones (so one run shows everything that works); a Thing whose TD cannot be consumed
// does. Every step has its own timeout and the whole run has one too, so it never hangs.
"use strict";

const { Servient } = require("@node-wot/core");
const { HttpClientFactory } = require("@node-wot/binding-http");

const OVERALL_TIMEOUT_MS = 30000;
const STEP_TIMEOUT_MS = 8000;
const OBSERVE_COUNT = 3;

function emit(record) {
    process.stdout.write(JSON.stringify(record) + "\n");
}

function message(error) {
    if (error instanceof Error) {
        return error.message || String(error);
    }
    return typeof error === "string" ? error : JSON.stringify(error);
}

/** Resolve with `promise`, or reject once `ms` have passed. */
function within(ms, label, promise) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${label}: no answer within ${ms} ms`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A promise resolved or rejected from outside, for values that arrive in callbacks. */
function deferred() {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
    });
    promise.catch(() => {}); // an error nobody awaits any more is not an unhandled rejection
    return { promise, resolve, reject };
}

function check(condition, what) {
    if (!condition) {
        throw new Error(`check failed: ${what}`);
    }
}

async function main(base) {
    const failed = [];
    const cleanups = []; // run last-in first-out, whatever happened

    async function step(name, body) {
        try {
            const result = await within(STEP_TIMEOUT_MS, name, body());
            emit({ step: name, ...result });
            return true;
        } catch (error) {
            failed.push(name);
            emit({ step: name, error: message(error) });
            return false;
        }
    }

    async function read(thing, property) {
        const output = await thing.readProperty(property);
        return output.value();
    }

    const servient = new Servient();
    servient.addClientFactory(new HttpClientFactory());
    const WoT = await servient.start();
    cleanups.push(() => servient.shutdown());

    try {
        // --- the directory: every TD it lists, as node-wot's discovery finds them ----------
        await step("explore:directory", async () => {
            const url = new URL(".well-known/wot", base).href;
            const discovery = await WoT.exploreDirectory(url);
            const listed = [];
            for await (const td of discovery) {
                listed.push({ title: td.title, id: td.id });
            }
            check(discovery.error === undefined, `exploring ${url}: ${message(discovery.error)}`);
            return { url, listed };
        });

        const things = {};
        for (const name of ["counter", "thermometer"]) {
            const url = new URL(`${name}/`, base).href;
            const ok = await step(`consume:${name}`, async () => {
                const td = await WoT.requestThingDescription(url);
                things[name] = await WoT.consume(td);
                return { url, title: td.title };
            });
            if (!ok) {
                throw new Error(`cannot consume the ${name} TD at ${url}`);
            }
        }
        const { counter, thermometer } = things;
        // Leave the thermometer as the demo starts it, so that a second run passes too.
        cleanups.push(async () => {
            await thermometer.writeProperty("threshold", 100);
            await thermometer.writeProperty("setpoint", 20);
        });

        // --- counter: read, write, read back, invoke -------------------------------------
        await step("read:counter.count", async () => ({ value: await read(counter, "count") }));
        await step("write:counter.count", async () => {
            await counter.writeProperty("count", 41);
            const value = await read(counter, "count");
            check(value === 41, `count read back after writing 41 is ${JSON.stringify(value)}`);
            return { written: 41, readBack: value };
        });
        await step("invoke:counter.increment", async () => {
            const output = await counter.invokeAction("increment", { by: 1 });
            const value = await output.value();
            check(value === 42, `increment({by: 1}) after 41 gave ${JSON.stringify(value)}`);
            return { input: { by: 1 }, output: value };
        });

        // --- thermometer: read, write, invoke ---------------------------------------------
        let temperature = 20;
        await step("read:thermometer.temperature", async () => {
            temperature = await read(thermometer, "temperature");
            check(typeof temperature === "number", `temperature is ${JSON.stringify(temperature)}`);
            return { value: temperature };
        });
        let setpoint = Math.round(temperature) + 1;
        await step("write:thermometer.setpoint", async () => {
            await thermometer.writeProperty("setpoint", setpoint);
            const value = await read(thermometer, "setpoint");
            check(value === setpoint, `setpoint read back after writing ${setpoint} is ${value}`);
            return { written: setpoint, readBack: value };
        });
        await step("invoke:thermometer.ramp", async () => {
            const input = { to: setpoint + 0.5, rate: 50 };
            const output = await thermometer.invokeAction("ramp", input);
            const value = await output.value();
            check(typeof value === "number", `ramp gave ${JSON.stringify(value)}`);
            setpoint = input.to;
            return { input, output: value };
        });

        // --- observe thermometer.temperature ----------------------------------------------
        await step("observe:thermometer.temperature", async () => {
            const values = [];
            const done = deferred();
            const subscription = await thermometer.observeProperty(
                "temperature",
                (output) => {
                    output.value().then((value) => {
                        if (typeof value !== "number") {
                            done.reject(new Error(`observed ${JSON.stringify(value)}, not a number`));
                            return;
                        }
                        values.push(value);
                        if (values.length >= OBSERVE_COUNT) {
                            done.resolve();
                        }
                    }, done.reject);
                },
                (error) => done.reject(new Error(`observe error: ${message(error)}`)),
            );
            try {
                // The demo moves the temperature every 100 ms: 3 values take well under 2 s.
                await within(4000, `${OBSERVE_COUNT} observed values`, done.promise);
            } finally {
                await subscription.stop();
            }
            return { values };
        });

        // --- subscribe to thermometer.overheated, then make it fire ------------------------
        await step("subscribe:thermometer.overheated", async () => {
            const fired = deferred();
            const subscription = await thermometer.subscribeEvent(
                "overheated",
                (output) => output.value().then(fired.resolve, fired.reject),
                (error) => fired.reject(new Error(`subscribe error: ${message(error)}`)),
            );
            let threshold;
            let data;
            try {
                // The threshold just above the temperature, then the setpoint far above it:
                // the next update (a fifth of the way to 150) crosses the threshold.
                const now = await read(thermometer, "temperature");
                threshold = Math.round((now + 1) * 10) / 10;
                await thermometer.writeProperty("threshold", threshold);
                await thermometer.writeProperty("setpoint", 150);
                data = await within(4000, "the overheated event", fired.promise);
            } finally {
                await subscription.stop();
            }
            check(data !== null && typeof data === "object", `event data ${JSON.stringify(data)}`);
            check(typeof data.temperature === "number", `temperature in ${JSON.stringify(data)}`);
            check(data.temperature > threshold, `${data.temperature} is above ${threshold}`);
            check(typeof data.time === "string" && !Number.isNaN(Date.parse(data.time)),
                  `time in ${JSON.stringify(data)}`);
            return { threshold, data };
        });
    } catch (error) {
        failed.push("consume");
        emit({ step: "abort", error: message(error) });
    } finally {
        while (cleanups.length > 0) {
            const cleanup = cleanups.pop();
            try {
                await within(STEP_TIMEOUT_MS, "cleanup", Promise.resolve().then(cleanup));
            } catch (error) {
                emit({ step: "cleanup", error: message(error) });
            }
        }
    }
    emit(failed.length === 0 ? { ok: true } : { ok: false, failed });
    return failed.length === 0 ? 0 : 1;
}

const base = process.argv[2];
if (!base) {
    process.stderr.write("usage: node consume.js BASE_URL   (e.g. http://127.0.0.1:8000/)\n");
    process.exit(2);
}
const overall = setTimeout(() => {
    emit({ step: "timeout", error: `not done within ${OVERALL_TIMEOUT_MS} ms` });
    emit({ ok: false, failed: ["timeout"] });
    process.exit(3);
}, OVERALL_TIMEOUT_MS);

main(base.endsWith("/") ? base : `${base}/`).then(
    (status) => {
        clearTimeout(overall);
        process.exitCode = status;
        // Everything was closed, so Node exits by itself; should some socket linger
        // anyway, do not wait for it (an unref'd timer never keeps the process alive).
        setTimeout(() => {
            process.stderr.write("consume.js: handles still open after cleanup; exiting\n");
            process.exit(status);
        }, 2000).unref();
    },
    (error) => {
        clearTimeout(overall);
        emit({ step: "fatal", error: message(error) });
        emit({ ok: false, failed: ["fatal"] });
        process.exit(1);
    },
);
