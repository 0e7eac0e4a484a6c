package fcproc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"banger/internal/errdefs"
)

// maxReplyBody bounds how much of a reply the client reads.
const maxReplyBody = 1 << 20

// Client calls Firecracker's HTTP API on its unix socket. It is safe for
// concurrent use; each call is bounded by its context.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the API socket at path (the host's path:
// under the jailer, Config.HostAPISocket).
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		// Firecracker's HTTP server knows no content encodings.
		DisableCompression: true,
		MaxIdleConns:       1,
	}
	return &Client{socket: path, hc: &http.Client{Transport: tr}}
}

// Close drops the client's idle connection.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// APIError is an error reply from Firecracker's API.
type APIError struct {
	Method, Path string
	StatusCode   int
	// FaultMessage is the reply's fault_message (or, for a request
	// Firecracker's HTTP layer could not parse, its "error"), else the raw
	// body.
	FaultMessage string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("firecracker API %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode), e.FaultMessage)
}

// Unwrap maps the reply to banger's sentinels: a request made in the wrong
// state of the VM (pre-boot only after InstanceStart, or the reverse) is a
// failed precondition, any other 4xx an invalid argument, anything else
// the VMM being unavailable.
func (e *APIError) Unwrap() error {
	switch {
	case strings.Contains(e.FaultMessage, "not supported after starting the microVM"),
		strings.Contains(e.FaultMessage, "not supported before starting the microVM"):
		return errdefs.ErrFailedPrecondition
	case e.StatusCode >= 400 && e.StatusCode < 500:
		return errdefs.ErrInvalidArgument
	default:
		return errdefs.ErrUnavailable
	}
}

// PutBootSource sets the kernel, initrd and command line (PUT /boot-source).
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", b, nil)
}

// PutDrive adds or replaces a drive (PUT /drives/{drive_id}).
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	return c.do(ctx, http.MethodPut, "/drives/"+url.PathEscape(d.DriveID), d, nil)
}

// PutNetworkInterface adds or replaces a NIC (PUT
// /network-interfaces/{iface_id}).
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	return c.do(ctx, http.MethodPut, "/network-interfaces/"+url.PathEscape(n.IfaceID), n, nil)
}

// PutMachineConfig sets vCPUs and memory (PUT /machine-config).
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfiguration) error {
	return c.do(ctx, http.MethodPut, "/machine-config", m, nil)
}

// PutLogger configures Firecracker's own log (PUT /logger).
func (c *Client) PutLogger(ctx context.Context, l Logger) error {
	return c.do(ctx, http.MethodPut, "/logger", l, nil)
}

// Action runs a synchronous action (PUT /actions).
func (c *Client) Action(ctx context.Context, a ActionType) error {
	return c.do(ctx, http.MethodPut, "/actions", InstanceActionInfo{ActionType: a}, nil)
}

// InstanceInfo describes the instance (GET /).
func (c *Client) InstanceInfo(ctx context.Context) (InstanceInfo, error) {
	var info InstanceInfo
	err := c.do(ctx, http.MethodGet, "/", nil, &info)
	return info, err
}

// do sends one request with body (when not nil) as JSON and decodes a 200
// reply into out (when not nil). 204 is success without a body.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("firecracker API %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return fmt.Errorf("firecracker API %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("firecracker API %s %s on %s: %w", method, path, c.socket, context.Cause(ctx))
		}
		return fmt.Errorf("firecracker API %s %s on %s: %w: %w", method, path, c.socket, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBody))
	if err != nil {
		return fmt.Errorf("firecracker API %s %s: reading the reply: %w", method, path, err)
	}
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return nil
	case resp.StatusCode == http.StatusOK:
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("firecracker API %s %s: decoding the reply %q: %w", method, path, truncate(data), err)
		}
		return nil
	}
	return &APIError{Method: method, Path: path, StatusCode: resp.StatusCode, FaultMessage: faultMessage(data)}
}

// faultMessage reads an error reply's message.
func faultMessage(data []byte) string {
	var f apiFault
	if err := json.Unmarshal(data, &f); err == nil {
		if f.FaultMessage != "" {
			return f.FaultMessage
		}
		if f.Error != "" {
			return f.Error
		}
	}
	if s := strings.TrimSpace(truncate(data)); s != "" {
		return s
	}
	return "(no message)"
}

func truncate(b []byte) string {
	const max = 512
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// IsAPIError reports whether err carries an error reply from the API (the
// request reached Firecracker and was refused), as opposed to a transport
// failure.
func IsAPIError(err error) bool {
	var ae *APIError
	return errors.As(err, &ae)
}
