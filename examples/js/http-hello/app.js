import { getEnvironment } from "wasi:cli/environment@0.2.12";
import {
  Fields,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.12";

const encoder = new TextEncoder();

function respond(responseOut, status, text) {
  const data = encoder.encode(text);
  const headers = Fields.fromList([
    ["content-type", encoder.encode("text/plain; charset=utf-8")],
    ["content-length", encoder.encode(String(data.length))],
  ]);
  const response = new OutgoingResponse(headers);
  response.setStatusCode(status);
  const body = response.body();
  ResponseOutparam.set(responseOut, { tag: "ok", val: response });
  const stream = body.write();
  // blocking-write-and-flush takes at most 4096 bytes at a time.
  for (let start = 0; start < data.length; start += 4096) {
    stream.blockingWriteAndFlush(data.subarray(start, start + 4096));
  }
  stream[Symbol.dispose]();
  OutgoingBody.finish(body, undefined);
}

function methodName(method) {
  return method.tag === "other" ? method.val : method.tag.toUpperCase();
}

export const incomingHandler = {
  handle(request, responseOut) {
    const method = methodName(request.method());
    const url = new URL(request.pathWithQuery() ?? "/", "http://localhost");
    console.log(`request ${method} ${url.pathname}`);
    if (method !== "GET") {
      respond(responseOut, 404, "not found\n");
    } else if (url.pathname === "/") {
      respond(responseOut, 200, "Hello from JavaScript on berth!\n");
    } else if (url.pathname === "/env") {
      const name = url.searchParams.get("name") ?? "";
      const found = getEnvironment().find(([key]) => key === name);
      respond(responseOut, found ? 200 : 404, found ? `${found[1]}\n` : "not set\n");
    } else {
      respond(responseOut, 404, "not found\n");
    }
  },
};
