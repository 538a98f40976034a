// The official MCP TypeScript SDK client (@modelcontextprotocol/sdk: Client over
// StreamableHTTPClientTransport) against one MCP endpoint of our gateway.
//
// Usage: node ts_client.mjs URL PREFIX  (MCPPORT_NODE_MODULES: where npm installed the SDK)
// PREFIX is what the endpoint puts before the everything server's tool and prompt names
// ("everything_" on the aggregated /mcp, "" on /servers/everything/mcp).
//
// Runs initialize, tools/list, tools/call echo, prompts/list, prompts/get, resources/read (a
// static resource and one through a template), then ends the session with DELETE. Prints one
// JSON object with what came back, for test_everything_ts.py to check; stops itself after 30 s.

import path from "node:path";
import { pathToFileURL } from "node:url";

const [url, prefix = ""] = process.argv.slice(2);
const modules = process.env.MCPPORT_NODE_MODULES;
if (!url || !modules) {
    console.error("usage: MCPPORT_NODE_MODULES=DIR node ts_client.mjs URL PREFIX");
    process.exit(2);
}
setTimeout(() => {
    console.error("ts_client: no end within 30 s");
    process.exit(3);
}, 30_000).unref();

// The SDK's ESM build, found in MCPPORT_NODE_MODULES (ESM ignores NODE_PATH).
const sdkDir = path.join(modules, "@modelcontextprotocol", "sdk");
const load = (file) => import(pathToFileURL(path.join(sdkDir, "dist/esm", file)).href);
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");

const transport = new StreamableHTTPClientTransport(new URL(url));
const client = new Client({ name: "mcpport-interop-ts", version: "0.0.0" });
const out = { steps: [] };
const step = async (name, f) => {
    out.steps.push(name);
    out[name] = await f();
};

try {
    await client.connect(transport);
    out.sessionId = transport.sessionId ?? null;
    out.protocolVersion = transport.protocolVersion ?? null;
    out.serverVersion = client.getServerVersion() ?? null;
    out.serverCapabilities = client.getServerCapabilities() ?? null;
    await step("tools", async () => (await client.listTools()).tools.map((t) => t.name));
    await step("echo", () => client.callTool({ name: `${prefix}echo`, arguments: { message: "from TypeScript ✓" } }));
    await step("prompts", async () => (await client.listPrompts()).prompts.map((p) => p.name));
    await step("prompt", () => client.getPrompt({ name: `${prefix}args-prompt`, arguments: { city: "Lyon", state: "Rhône" } }));
    await step("staticResource", () => client.readResource({ uri: "demo://resource/static/document/features.md" }));
    await step("templatedResource", () => client.readResource({ uri: "demo://resource/dynamic/text/42" }));
    await step("terminated", async () => {
        await transport.terminateSession();
        return transport.sessionId === undefined;
    });
} catch (e) {
    out.error = { message: String(e?.message ?? e), code: e?.code ?? null, step: out.steps.at(-1) ?? "connect" };
} finally {
    await client.close().catch(() => {});
}
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(out.error ? 1 : 0);
