// An external authorization server for test_oauth.py: oidc-provider (a certified OpenID
// provider from npm) on 127.0.0.1, issuing JWT access tokens with the client credentials grant
// and resource indicators (RFC 8707), so that a token's audience is the resource asked for.
//
// Clients (secret "secret"): rs256, ps256, es256, eddsa (signing with that algorithm, tokens of
// 5 minutes) and short (RS256, tokens of 1 second). Scopes: mcp and other.
//
// Usage: node oidc_issuer.mjs NODE_MODULES_DIR; prints "listening on http://127.0.0.1:PORT".
import { createServer } from "node:http";
import { generateKeyPairSync } from "node:crypto";
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const { default: Provider } = await import(pathToFileURL(path.join(modules, "oidc-provider/lib/index.js")).href);

const jwk = (kind, options, kid) => ({ ...generateKeyPairSync(kind, options).privateKey.export({ format: "jwk" }), kid });
const keys = [
  { ...jwk("rsa", { modulusLength: 2048 }, "rsa-1"), use: "sig" },
  { ...jwk("ec", { namedCurve: "P-256" }, "ec-1"), use: "sig" },
  { ...jwk("ed25519", {}, "ed-1"), use: "sig" },
];
const algs = { rs256: "RS256", ps256: "PS256", es256: "ES256", eddsa: "EdDSA", short: "RS256" };

const server = createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: Object.keys(algs).map((client_id) => ({
    client_id,
    client_secret: "secret",
    grant_types: ["client_credentials"],
    redirect_uris: [],
    response_types: [],
  })),
  jwks: { keys },
  scopes: ["mcp", "other"],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: "mcp other",
        audience: resource,
        accessTokenFormat: "jwt",
        accessTokenTTL: client.clientId === "short" ? 1 : 300,
        jwt: { sign: { alg: algs[client.clientId] } },
      }),
    },
  },
  enabledJWA: { requestObjectSigningAlgValues: ["RS256"], idTokenSigningAlgValues: ["RS256", "PS256", "ES256", "EdDSA"] },
});
server.on("request", provider.callback());
console.log(`listening on ${issuer}`);
