package rpc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"banger/internal/errdefs"
)

// Client is a JSON-RPC client over one unix-socket connection. It is safe
// for concurrent use; calls are multiplexed and matched by id.
type Client struct {
	nc  net.Conn
	wmu sync.Mutex // serialises writes

	// mu guards the fields below. Leaf lock.
	mu      sync.Mutex
	nextID  uint64
	pending map[string]*pendingCall
	err     error // set once the connection is dead
	// dropped is the error the daemon sent, with no id, before it closed
	// the connection (a request over its size limit, unframeable input).
	dropped *Error
	done    chan struct{}
}

type pendingCall struct {
	resp   chan response
	events chan StreamEvent // nil for plain calls
	gone   chan struct{}    // closed when the caller stops waiting
}

// Dial connects to the daemon's socket. When nothing listens there the
// error wraps errdefs.ErrUnavailable and says how to start the daemon.
func Dial(ctx context.Context, socket string) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("the banger daemon is not running (nothing listens on %s): start it with `sudo systemctl start banger` or `sudo banger daemon`: %w", socket, errdefs.ErrUnavailable)
		case errors.Is(err, os.ErrPermission):
			return nil, fmt.Errorf("permission denied on %s: run as root or join the daemon's group (default banger): %w", socket, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("connect to banger daemon at %s: %w", socket, err)
	}
	c := &Client{nc: nc, pending: make(map[string]*pendingCall), done: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

// Close closes the connection; pending calls fail.
func (c *Client) Close() error {
	err := c.nc.Close()
	<-c.done
	return err
}

func (c *Client) readLoop() {
	defer close(c.done)
	br := bufio.NewReaderSize(c.nc, 64<<10)
	var err error
	for {
		var line []byte
		line, err = readLine(br, 64<<20)
		if err != nil {
			break
		}
		c.dispatch(line)
	}
	c.mu.Lock()
	if c.dropped != nil {
		c.err = fmt.Errorf("the banger daemon closed the connection: %w", c.dropped)
	} else {
		c.err = fmt.Errorf("connection to banger daemon closed (was the daemon stopped, or is this user not allowed to use it?): %w", errdefs.ErrUnavailable)
	}
	pending := c.pending
	c.pending = map[string]*pendingCall{}
	c.mu.Unlock()
	for _, p := range pending {
		close(p.resp)
	}
}

func (c *Client) dispatch(line []byte) {
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
		Result json.RawMessage `json:"result"`
		Error  *Error          `json:"error"`
	}
	if json.Unmarshal(line, &msg) != nil {
		return
	}
	if msg.Method == methodEvent {
		var ev StreamEvent
		if json.Unmarshal(msg.Params, &ev) != nil {
			return
		}
		c.mu.Lock()
		p := c.pending[string(ev.ID)]
		c.mu.Unlock()
		if p != nil && p.events != nil {
			select {
			case p.events <- ev:
			case <-p.gone:
			}
		}
		return
	}
	c.mu.Lock()
	if msg.Error != nil && (len(msg.ID) == 0 || string(msg.ID) == "null") {
		c.dropped = msg.Error
	}
	p := c.pending[string(msg.ID)]
	delete(c.pending, string(msg.ID))
	c.mu.Unlock()
	if p != nil {
		p.resp <- response{ID: msg.ID, Result: msg.Result, Error: msg.Error}
	}
}

func (c *Client) send(msg any) error {
	raw, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.nc.Write(append(raw, '\n'))
	return err
}

// Call invokes method with params and decodes the result into result
// (which may be nil).
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	return c.Stream(ctx, method, params, nil, result)
}

// Stream invokes a streaming method: onEvent sees each event in order
// before Stream returns the final result. An error from onEvent cancels the
// call. When ctx ends, the daemon is told to cancel the call.
func (c *Client) Stream(ctx context.Context, method string, params any, onEvent func(StreamEvent) error, result any) error {
	call, err := c.Start(ctx, method, params, onEvent != nil)
	if err != nil {
		return err
	}
	return call.Wait(ctx, onEvent, result)
}

// ClientCall is a call in flight, for methods that take stream input.
type ClientCall struct {
	c      *Client
	id     json.RawMessage
	method string
	p      *pendingCall
}

// Start sends a request and returns without waiting for its response.
func (c *Client) Start(ctx context.Context, method string, params any, stream bool) (*ClientCall, error) {
	var rawParams json.RawMessage
	if params != nil {
		var err error
		if rawParams, err = json.Marshal(params); err != nil {
			return nil, fmt.Errorf("marshal params of %s: %w", method, err)
		}
	}
	p := &pendingCall{resp: make(chan response, 1), gone: make(chan struct{})}
	if stream {
		p.events = make(chan StreamEvent, 64)
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := json.RawMessage(strconv.FormatUint(c.nextID, 10))
	c.pending[string(id)] = p
	c.mu.Unlock()
	if err := c.send(request{JSONRPC: Version, ID: id, Method: method, Params: rawParams}); err != nil {
		c.forget(id)
		// The daemon may have said why before it hung up (a request over
		// its size limit): give its answer a moment to arrive.
		select {
		case <-c.done:
		case <-time.After(time.Second):
		}
		c.mu.Lock()
		dropped := c.dropped
		c.mu.Unlock()
		if dropped != nil {
			return nil, fmt.Errorf("banger daemon refused %s: %w", method, dropped)
		}
		return nil, fmt.Errorf("send %s to banger daemon (connection closed: was the daemon stopped, or is this user not allowed to use it?): %v: %w", method, err, errdefs.ErrUnavailable)
	}
	return &ClientCall{c: c, id: id, method: method, p: p}, nil
}

func (c *Client) forget(id json.RawMessage) {
	c.mu.Lock()
	delete(c.pending, string(id))
	c.mu.Unlock()
}

// Send streams one input event (stdin bytes, a resize) to the call.
func (cc *ClientCall) Send(kind string, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return cc.c.send(request{JSONRPC: Version, Method: methodInput, Params: mustMarshal(StreamEvent{ID: cc.id, Kind: kind, Data: raw})})
}

// Cancel asks the daemon to cancel the call's context.
func (cc *ClientCall) Cancel() error {
	return cc.c.send(request{JSONRPC: Version, Method: methodCancel, Params: mustMarshal(cancelParams{ID: cc.id})})
}

// Wait delivers events to onEvent and returns the final result.
func (cc *ClientCall) Wait(ctx context.Context, onEvent func(StreamEvent) error, result any) error {
	defer close(cc.p.gone)
	var eventErr error
	deliver := func(ev StreamEvent) {
		if eventErr != nil || onEvent == nil {
			return
		}
		if eventErr = onEvent(ev); eventErr != nil {
			cc.Cancel()
		}
	}
	for {
		select {
		case ev := <-cc.p.events:
			deliver(ev)
		case resp, ok := <-cc.p.resp:
			// Events are queued before the response is read: drain them.
			for drained := false; !drained; {
				select {
				case ev := <-cc.p.events:
					deliver(ev)
				default:
					drained = true
				}
			}
			if !ok {
				cc.c.mu.Lock()
				err := cc.c.err
				cc.c.mu.Unlock()
				return err
			}
			if eventErr != nil {
				return eventErr
			}
			if resp.Error != nil {
				return resp.Error
			}
			if result != nil && len(resp.Result) > 0 {
				if err := json.Unmarshal(resp.Result, result); err != nil {
					return fmt.Errorf("decode result of %s: %w", cc.method, err)
				}
			}
			return nil
		case <-ctx.Done():
			cc.Cancel()
			cc.c.forget(cc.id)
			return ctx.Err()
		}
	}
}
