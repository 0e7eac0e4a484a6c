// Package rpc is banger's JSON-RPC 2.0 transport over a unix socket: the
// wire types, the server loop the daemon embeds, and the typed client the
// CLI uses.
//
// # Framing
//
// One JSON value per line: every message is a single JSON object followed
// by '\n' (encoding/json never emits a raw newline inside a value). This
// keeps the protocol debuggable with `socat - UNIX:/run/banger/banger.sock`
// and lets the server resynchronise after a malformed line. A line longer
// than the server's limit (default 1 MiB) gets one -32600 error and the
// connection is closed, since the rest of that line cannot be trusted.
//
// Batches (a JSON array) are not supported and get a single -32600 error;
// banger's clients never send them.
//
// # Concurrency
//
// A connection carries many requests; the server handles them concurrently
// (up to a per-connection bound) and responses may arrive in any order,
// matched by id. A client that disconnects cancels the contexts of its
// in-flight requests. A client may cancel one request by sending the
// notification {"method":"rpc.cancel","params":{"id":ID}}.
//
// # Streams
//
// A long call (op.watch, vm.exec, vm.logs, vm.proxy) streams events to the
// caller before its final response, as notifications bound to the request id:
//
//	{"jsonrpc":"2.0","method":"rpc.event","params":{"id":7,"kind":"progress","data":{...}}}
//
// and the caller streams input to a running call the same way:
//
//	{"jsonrpc":"2.0","method":"rpc.input","params":{"id":7,"kind":"stdin","data":"aGVsbG8K"}}
//
// Byte streams (stdin, stdout, stderr) carry base64 in data ([]byte in Go).
// Kinds are per method: "progress" for operations; "stdout", "stderr",
// "stdin", "eof", "resize" and "signal" for exec. The final response ends
// the stream; no event for that id follows it.
package rpc
