package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
)

// PeerCred is the caller's identity as the kernel reports it (SO_PEERCRED).
type PeerCred struct {
	PID int32
	UID uint32
	GID uint32
}

// Handler serves one call. The returned value is marshalled as the result;
// a returned error is mapped by the server's ErrorMapper. ctx is cancelled
// when the caller disconnects, cancels the call, or the server is forced
// down.
type Handler interface {
	ServeRPC(ctx context.Context, call *Call) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, call *Call) (any, error)

func (f HandlerFunc) ServeRPC(ctx context.Context, call *Call) (any, error) { return f(ctx, call) }

// Call is one in-flight request as a Handler sees it.
type Call struct {
	Method string
	Params json.RawMessage
	Peer   PeerCred

	id     json.RawMessage
	conn   *serverConn
	cancel context.CancelFunc
	input  chan StreamEvent
}

// Bind decodes the params into v strictly: unknown fields, wrong types and
// trailing data are -32602 errors naming the method. Absent params decode
// as an empty object.
func (c *Call) Bind(v any) error {
	params := bytes.TrimSpace(c.Params)
	if len(params) == 0 || bytes.Equal(params, []byte("null")) {
		params = []byte("{}")
	}
	if params[0] != '{' {
		return Errorf(CodeInvalidParams, "invalid params for %s: want a JSON object", c.Method)
	}
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeInvalidParams, "invalid params for %s: %v", c.Method, err)
	}
	if dec.More() {
		return Errorf(CodeInvalidParams, "invalid params for %s: trailing data", c.Method)
	}
	return nil
}

// Send streams one event of the given kind to the caller before the final
// response. It fails once the connection is gone.
func (c *Call) Send(kind string, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("marshal %s event: %w", kind, err)
	}
	return c.conn.write(request{
		JSONRPC: Version,
		Method:  methodEvent,
		Params:  mustMarshal(StreamEvent{ID: c.id, Kind: kind, Data: raw}),
	})
}

// Input delivers the caller's stream input (rpc.input notifications for
// this call) in order. Handlers that take no input may ignore it.
func (c *Call) Input() <-chan StreamEvent { return c.input }

func mustMarshal(v any) json.RawMessage {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("rpc: marshal %T: %v", v, err))
	}
	return raw
}
