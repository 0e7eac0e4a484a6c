package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"time"
)

var errLineTooLong = errors.New("line too long")

// serverConn serves one client connection: a reader loop that parses lines
// and starts a goroutine per call, and a mutex-serialised writer.
type serverConn struct {
	s    *Server
	nc   net.Conn
	peer PeerCred
	// ctx is cancelled when the client goes away or shutdown is forced;
	// every call's context derives from it.
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup // running calls

	wmu sync.Mutex // serialises writes; held only for one write

	// mu guards calls and draining. Leaf lock.
	mu       sync.Mutex
	calls    map[string]*Call
	draining bool
}

func newServerConn(s *Server, nc net.Conn, peer PeerCred) *serverConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &serverConn{
		s: s, nc: nc, peer: peer, ctx: ctx, cancel: cancel,
		sem:   make(chan struct{}, s.maxInFlight()),
		calls: make(map[string]*Call),
	}
}

// stopReading makes the reader loop return without cancelling calls: the
// graceful half of shutdown.
func (c *serverConn) stopReading() {
	c.mu.Lock()
	c.draining = true
	c.mu.Unlock()
	c.nc.SetReadDeadline(time.Now())
}

func (c *serverConn) isDraining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

func (c *serverConn) serve() {
	defer c.nc.Close()
	br := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		line, err := readLine(br, c.s.maxMessage())
		if errors.Is(err, errLineTooLong) {
			c.writeError(nil, Errorf(CodeInvalidRequest, "request exceeds the %d-byte limit", c.s.maxMessage()))
			break
		}
		if err != nil {
			break
		}
		c.handleLine(line)
	}
	if !c.isDraining() {
		// The client went away (or sent garbage we cannot frame): its
		// calls have nobody to answer to.
		c.cancel()
	}
	c.wg.Wait()
	c.cancel()
}

// readLine returns the next '\n'-terminated line without the terminator, or
// errLineTooLong once it passes max bytes. A final unterminated line at EOF
// is returned as a line.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > max+1 {
			return nil, errLineTooLong
		}
		buf = append(buf, frag...)
		switch {
		case err == nil:
			return buf[:len(buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(bytes.TrimSpace(buf)) > 0:
			return buf, nil
		default:
			return nil, err
		}
	}
}

func (c *serverConn) handleLine(line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	if !json.Valid(line) {
		c.writeError(nil, Errorf(CodeParseError, "parse error: invalid JSON"))
		return
	}
	if line[0] == '[' {
		c.writeError(nil, Errorf(CodeInvalidRequest, "batch requests are not supported"))
		return
	}
	if line[0] != '{' {
		c.writeError(nil, Errorf(CodeInvalidRequest, "invalid request: want a JSON object"))
		return
	}
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		c.writeError(idIfValid(line), Errorf(CodeInvalidRequest, "invalid request: %v", err))
		return
	}
	if req.ID != nil && !validID(req.ID) {
		c.writeError(nil, Errorf(CodeInvalidRequest, "invalid request: id must be a string, a number or null"))
		return
	}
	var invalid string
	switch {
	case req.JSONRPC != Version:
		invalid = `"jsonrpc" must be "2.0"`
	case req.Method == "":
		invalid = `"method" is missing`
	case len(req.Params) > 0 && req.Params[0] != '{' && req.Params[0] != '[':
		invalid = `"params" must be an object or an array`
	}
	if invalid != "" {
		if req.ID != nil {
			c.writeError(req.ID, Errorf(CodeInvalidRequest, "invalid request: %s", invalid))
		}
		return
	}
	if req.ID == nil {
		c.handleNotification(req)
		return
	}
	c.startCall(req)
}

// idIfValid digs the id out of an otherwise malformed request so the error
// can be matched by the client.
func idIfValid(line []byte) json.RawMessage {
	var probe struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(line, &probe) == nil && validID(probe.ID) {
		return probe.ID
	}
	return nil
}

func (c *serverConn) handleNotification(req request) {
	switch req.Method {
	case methodInput:
		var ev StreamEvent
		if json.Unmarshal(req.Params, &ev) != nil {
			return
		}
		c.mu.Lock()
		call := c.calls[string(ev.ID)]
		c.mu.Unlock()
		if call == nil {
			return
		}
		select {
		case call.input <- ev:
		case <-c.ctx.Done():
		}
	case methodCancel:
		var p cancelParams
		if json.Unmarshal(req.Params, &p) != nil {
			return
		}
		c.mu.Lock()
		call := c.calls[string(p.ID)]
		c.mu.Unlock()
		if call != nil {
			call.cancel()
		}
	default:
		// JSON-RPC: a notification gets no response. banger defines no
		// notification methods besides the transport's own.
	}
}

func (c *serverConn) startCall(req request) {
	key := string(req.ID)
	ctx, cancel := context.WithCancel(c.ctx)
	call := &Call{
		Method: req.Method,
		Params: req.Params,
		Peer:   c.peer,
		id:     req.ID,
		conn:   c,
		cancel: cancel,
		input:  make(chan StreamEvent, 16),
	}
	c.mu.Lock()
	if _, dup := c.calls[key]; dup {
		c.mu.Unlock()
		cancel()
		c.writeError(req.ID, Errorf(CodeInvalidRequest, "invalid request: id %s is already in flight on this connection", key))
		return
	}
	c.calls[key] = call
	c.mu.Unlock()

	select {
	case c.sem <- struct{}{}:
	case <-c.ctx.Done():
		c.finish(call)
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() { <-c.sem }()
		msg := c.respond(ctx, call)
		// Forget the id before answering, so the client may reuse it as
		// soon as it has the response.
		c.finish(call)
		c.write(msg)
	}()
}

// respond runs the call and builds its response message.
func (c *serverConn) respond(ctx context.Context, call *Call) response {
	result, err := c.run(ctx, call)
	if err != nil {
		return response{JSONRPC: Version, ID: call.id, Error: c.s.mapError(err)}
	}
	raw, err := json.Marshal(result)
	if err != nil {
		return response{JSONRPC: Version, ID: call.id, Error: Errorf(CodeInternalError, "marshal result of %s: %v", call.Method, err)}
	}
	return response{JSONRPC: Version, ID: call.id, Result: raw}
}

func (c *serverConn) finish(call *Call) {
	call.cancel()
	c.mu.Lock()
	delete(c.calls, string(call.id))
	c.mu.Unlock()
}

func (c *serverConn) run(ctx context.Context, call *Call) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.s.logger().Error("rpc handler panicked", "method", call.Method, "panic", r, "stack", string(debug.Stack()))
			err = Errorf(CodeInternalError, "internal error in %s", call.Method)
		}
	}()
	return c.s.Handler.ServeRPC(ctx, call)
}

func (c *serverConn) writeError(id json.RawMessage, e *Error) {
	if id == nil {
		id = json.RawMessage("null")
	}
	c.write(response{JSONRPC: Version, ID: id, Error: e})
}

// write sends one message. A failed or timed-out write means the client is
// unusable: the connection is closed and its calls cancelled.
func (c *serverConn) write(msg any) error {
	raw, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("marshal message: %w", err)
	}
	raw = append(raw, '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ctx.Err() != nil && !c.isDraining() {
		return fmt.Errorf("write to client: %w", net.ErrClosed)
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.s.writeTimeout()))
	if _, err := c.nc.Write(raw); err != nil {
		c.cancel()
		c.nc.Close()
		return fmt.Errorf("write to client: %w", err)
	}
	return nil
}
