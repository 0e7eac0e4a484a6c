package daemon

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"

	"banger/internal/rpc"
)

// proxy splices the caller to the guest's SSH port (for `banger proxy`, a
// user's own ssh ProxyCommand). vmLocks[id] is held only to check the state
// and copy the handles.
func (m *vmManager) proxy(ctx context.Context, call *rpc.Call) (struct{}, error) {
	ref, err := bindRef(call)
	if err != nil {
		return struct{}{}, err
	}
	h, err := m.runningHandles(ctx, ref)
	if err != nil {
		return struct{}{}, err
	}
	conn, err := m.guestDial(ctx, "tcp", netip.AddrPortFrom(h.IP, 22).String())
	if err != nil {
		return struct{}{}, err
	}
	defer conn.Close()
	go func() {
		for {
			select {
			case <-ctx.Done():
				conn.Close()
				return
			case ev := <-call.Input():
				switch ev.Kind {
				case rpc.InputStdin:
					var b []byte
					if json.Unmarshal(ev.Data, &b) == nil {
						if _, err := conn.Write(b); err != nil {
							return
						}
					}
				case rpc.InputEOF:
					if tc, ok := conn.(*net.TCPConn); ok {
						tc.CloseWrite()
					}
				}
			}
		}
	}()
	w := &eventWriter{call: call, kind: rpc.EventStdout}
	buf := make([]byte, 32<<10)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return struct{}{}, werr
			}
		}
		if err != nil {
			return struct{}{}, nil
		}
	}
}
