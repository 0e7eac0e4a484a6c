package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"banger/internal/errdefs"
)

// qmpWriteTimeout bounds one command's write when ctx has no deadline. A
// QMP command is a few hundred bytes; only a hung QEMU makes it block.
const qmpWriteTimeout = 10 * time.Second

// ErrQMPClosed is the error of a command on a QMP connection that has
// ended: closed by Close, or by QEMU (which it does when it exits).
var ErrQMPClosed = fmt.Errorf("QMP connection closed: %w", errdefs.ErrUnavailable)

// QMPError is an error reply from QEMU: {"error": {"class", "desc"}}.
type QMPError struct {
	Command string // the command that failed
	Class   string // e.g. "GenericError", "CommandNotFound", "DeviceNotFound"
	Desc    string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("QMP %s: %s: %s", e.Command, e.Class, e.Desc)
}

// QMPClient is a connection to QEMU's machine protocol (QMP) that has
// negotiated capabilities. Commands may be issued from many goroutines;
// each carries an id and gets its own reply. Asynchronous events are
// read and dropped.
type QMPClient struct {
	conn    net.Conn
	version string
	closed  chan struct{} // closed when the read loop has ended

	wmu sync.Mutex // serialises writes; held for one write

	mu      sync.Mutex             // guards the fields below; never held across I/O
	nextID  uint64                 // guarded by mu
	pending map[uint64]chan qmpMsg // guarded by mu: commands waiting for their reply
	err     error                  // guarded by mu: why the connection ended (set once)
}

// qmpMsg is any message QEMU sends: a greeting, a reply or an event.
type qmpMsg struct {
	QMP *struct {
		Version struct {
			QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
		} `json:"version"`
	} `json:"QMP"`
	ID     json.RawMessage `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

// DialQMP connects to the QMP socket at path, reads QEMU's greeting and
// leaves capability negotiation (qmp_capabilities). ctx bounds the dial and
// the handshake, not the connection.
func DialQMP(ctx context.Context, path string) (*QMPClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("QMP dial %s: %w", path, err)
	}
	// The greeting is read before the read loop starts; ctx bounds it.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	if dl, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(dl)
	}
	dec := json.NewDecoder(conn)
	var greeting qmpMsg
	err = dec.Decode(&greeting)
	if !stop() || ctx.Err() != nil {
		conn.Close()
		return nil, fmt.Errorf("QMP %s: waiting for the greeting: %w", path, context.Cause(ctx))
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("QMP %s: reading the greeting: %w", path, err)
	}
	if greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("QMP %s: the first message is not a QMP greeting", path)
	}
	conn.SetReadDeadline(time.Time{})
	v := greeting.QMP.Version.QEMU
	c := &QMPClient{
		conn:    conn,
		version: fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro),
		closed:  make(chan struct{}),
		pending: map[uint64]chan qmpMsg{},
	}
	go c.readLoop(dec)
	if _, err := c.Execute(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("QMP %s: %w", path, err)
	}
	return c, nil
}

// Version is the QEMU version the greeting announced ("7.2.22").
func (c *QMPClient) Version() string { return c.version }

// Close ends the connection; commands waiting for a reply fail with
// ErrQMPClosed.
func (c *QMPClient) Close() error {
	c.fail(ErrQMPClosed)
	err := c.conn.Close()
	<-c.closed
	return err
}

// Done is closed when the connection has ended.
func (c *QMPClient) Done() <-chan struct{} { return c.closed }

// Execute runs a QMP command and returns its "return" value. args, if not
// nil, is marshalled as the command's "arguments" object. An error reply
// is a *QMPError; a connection that ends first gives an error wrapping
// ErrQMPClosed. ctx bounds the wait for the reply; a command already sent
// may still take effect after ctx ends.
func (c *QMPClient) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	req := struct {
		Execute   string          `json:"execute"`
		Arguments json.RawMessage `json:"arguments,omitempty"`
		ID        uint64          `json:"id"`
	}{Execute: command}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("QMP %s: arguments: %w", command, err)
		}
		if string(b) != "null" {
			req.Arguments = b
		}
	}

	reply := make(chan qmpMsg, 1)
	c.mu.Lock()
	if err := c.err; err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("QMP %s: %w", command, err)
	}
	c.nextID++
	req.ID = c.nextID
	c.pending[req.ID] = reply
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
	}()

	line, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", command, err)
	}
	if err := c.write(ctx, append(line, '\n')); err != nil {
		return nil, fmt.Errorf("QMP %s: %w", command, err)
	}

	var msg qmpMsg
	select {
	case msg = <-reply:
	case <-c.closed:
		select {
		case msg = <-reply: // it came just before the end
		default:
			return nil, fmt.Errorf("QMP %s: %w", command, c.closeErr())
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("QMP %s: waiting for the reply: %w", command, context.Cause(ctx))
	}
	if msg.Error != nil {
		return nil, &QMPError{Command: command, Class: msg.Error.Class, Desc: msg.Error.Desc}
	}
	return msg.Return, nil
}

// write sends one whole message. A failed or partial write leaves the
// stream unusable, so it ends the connection.
func (c *QMPClient) write(ctx context.Context, b []byte) error {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(qmpWriteTimeout)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(dl)
	if _, err := c.conn.Write(b); err != nil {
		c.fail(fmt.Errorf("%w: write: %w", ErrQMPClosed, err))
		c.conn.Close()
		return c.closeErr()
	}
	return nil
}

// readLoop hands each reply to the command with its id and drops events,
// until the connection ends.
func (c *QMPClient) readLoop(dec *json.Decoder) {
	defer close(c.closed)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				c.fail(ErrQMPClosed)
			} else {
				c.fail(fmt.Errorf("%w: read: %w", ErrQMPClosed, err))
			}
			return
		}
		var msg qmpMsg
		if json.Unmarshal(raw, &msg) != nil || msg.ID == nil {
			continue // an event, or a message that is none of ours
		}
		id, err := strconv.ParseUint(string(msg.ID), 10, 64)
		if err != nil {
			continue
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- msg // buffered; each id is answered once
		}
	}
}

// fail records why the connection ended, if nothing has yet.
func (c *QMPClient) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *QMPClient) closeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return ErrQMPClosed
	}
	return c.err
}
