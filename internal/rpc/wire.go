package rpc

import (
	"encoding/json"
	"errors"
	"fmt"

	"banger/internal/errdefs"
)

// Version is the only JSON-RPC version banger speaks.
const Version = "2.0"

// DefaultMaxMessageBytes bounds one message (one line) read by the server.
const DefaultMaxMessageBytes = 1 << 20

// Methods the transport itself handles; they never reach the Handler.
const (
	methodEvent  = "rpc.event"  // server -> client: a stream event for a call
	methodInput  = "rpc.input"  // client -> server: stream input for a call
	methodCancel = "rpc.cancel" // client -> server: cancel one call
)

// Standard JSON-RPC 2.0 error codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
)

// banger's own codes, in the range JSON-RPC reserves for servers. Each maps
// one-to-one to a sentinel in errdefs.
const (
	CodeNotFound           = -32001
	CodeAlreadyExists      = -32002
	CodeInvalidArgument    = -32003
	CodeBusy               = -32004
	CodeFailedPrecondition = -32005
	CodeUnavailable        = -32006
	CodeCanceled           = -32007
)

var codeSentinels = []struct {
	code     int
	sentinel error
}{
	{CodeNotFound, errdefs.ErrNotFound},
	{CodeAlreadyExists, errdefs.ErrAlreadyExists},
	{CodeInvalidArgument, errdefs.ErrInvalidArgument},
	{CodeBusy, errdefs.ErrBusy},
	{CodeFailedPrecondition, errdefs.ErrFailedPrecondition},
	{CodeUnavailable, errdefs.ErrUnavailable},
	{CodeCanceled, errdefs.ErrCanceled},
}

// request is any incoming message: a call when ID is present, else a
// notification.
type request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *Error          `json:"error,omitempty"`
}

// StreamEvent is one event of a streaming call, in either direction.
type StreamEvent struct {
	ID   json.RawMessage `json:"id"`
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data,omitempty"`
}

type cancelParams struct {
	ID json.RawMessage `json:"id"`
}

// Error is a JSON-RPC error object. On the client side, errors.Is(err,
// errdefs.ErrNotFound) and friends work through Unwrap.
type Error struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the errdefs sentinel for banger's own codes.
func (e *Error) Unwrap() error {
	for _, cs := range codeSentinels {
		if cs.code == e.Code {
			return cs.sentinel
		}
	}
	return nil
}

// Errorf makes an *Error with the given code.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorFromErr maps err to a wire error: an *Error passes through; an
// errdefs sentinel becomes banger's code with the full message; anything
// else is an internal error. The daemon's dispatch edge is the only caller.
func ErrorFromErr(err error) *Error {
	var re *Error
	if errors.As(err, &re) {
		return re
	}
	for _, cs := range codeSentinels {
		if errors.Is(err, cs.sentinel) {
			return &Error{Code: cs.code, Message: err.Error()}
		}
	}
	return &Error{Code: CodeInternalError, Message: err.Error()}
}

// validID reports whether raw is a JSON-RPC id: a string, a number or null.
func validID(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return false
	}
	switch raw[0] {
	case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var v any
		return json.Unmarshal(raw, &v) == nil
	case 'n':
		return string(raw) == "null"
	}
	return false
}
