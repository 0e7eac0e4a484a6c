package fakevmm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"
)

// serveQMP serves the QMP socket one client at a time, as QEMU's socket
// chardev does: a second client's connect succeeds (the listen backlog)
// but it is greeted only once the first has gone.
func (v *vm) serveQMP() {
	for {
		c, err := v.qmpL.Accept()
		if err != nil {
			return // the listener is closed at exit
		}
		v.qmpMu.Lock()
		v.qmpC, v.qmpNeg = c, false
		v.qmpMu.Unlock()
		v.serveQMPConn(c)
		v.qmpMu.Lock()
		if v.qmpC == c {
			v.qmpC, v.qmpNeg = nil, false
		}
		v.qmpMu.Unlock()
		c.Close()
	}
}

// qmpErr is an error reply's "error" member.
type qmpErr struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func genericErr(format string, args ...any) *qmpErr {
	return &qmpErr{"GenericError", fmt.Sprintf(format, args...)}
}

// send writes one message to c if it is still the client being served.
func (v *vm) send(c net.Conn, msg any) {
	b, err := json.Marshal(msg)
	if err != nil {
		panic(err)
	}
	v.qmpMu.Lock()
	defer v.qmpMu.Unlock()
	if v.qmpC == c {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.Write(append(b, '\r', '\n'))
	}
}

// emit sends an event to the client, if one has negotiated capabilities
// (QEMU sends events only in command mode). data may be nil.
func (v *vm) emit(event string, data any) {
	now := time.Now()
	msg := map[string]any{
		"event":     event,
		"timestamp": map[string]int64{"seconds": now.Unix(), "microseconds": int64(now.Nanosecond() / 1000)},
	}
	if data != nil {
		msg["data"] = data
	}
	v.qmpMu.Lock()
	c, neg := v.qmpC, v.qmpNeg
	v.qmpMu.Unlock()
	if c != nil && neg {
		v.send(c, msg)
	}
}

func (v *vm) serveQMPConn(c net.Conn) {
	v.send(c, map[string]any{"QMP": map[string]any{
		"version": map[string]any{
			"qemu":    map[string]int{"major": 7, "minor": 2, "micro": 22},
			"package": "fakevmm",
		},
		"capabilities": []string{"oob"},
	}})
	dec := json.NewDecoder(c)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if _, ok := err.(*json.SyntaxError); ok {
				// QEMU resynchronises; the fake hangs up after saying why.
				v.send(c, map[string]any{"error": genericErr("JSON parse error, %v", err)})
			}
			return
		}
		var req map[string]json.RawMessage
		if err := json.Unmarshal(raw, &req); err != nil {
			v.send(c, map[string]any{"error": genericErr("QMP input must be a JSON object")})
			continue
		}
		reply := map[string]any{}
		if id, ok := req["id"]; ok {
			reply["id"] = id
		}
		ret, qerr := v.dispatch(c, req)
		if qerr != nil {
			reply["error"] = qerr
		} else {
			reply["return"] = ret
		}
		v.send(c, reply)
		if qerr == nil {
			v.after(req)
		}
	}
}

// dispatch runs one request and returns its "return" value or error.
func (v *vm) dispatch(c net.Conn, req map[string]json.RawMessage) (any, *qmpErr) {
	for k := range req {
		if k != "execute" && k != "arguments" && k != "id" {
			return nil, genericErr("QMP input member '%s' is unexpected", k)
		}
	}
	rawCmd, ok := req["execute"]
	if !ok {
		return nil, genericErr("QMP input lacks member 'execute'")
	}
	var cmd string
	if json.Unmarshal(rawCmd, &cmd) != nil {
		return nil, genericErr("QMP input member 'execute' must be a string")
	}
	args := map[string]json.RawMessage{}
	if a, ok := req["arguments"]; ok {
		if json.Unmarshal(a, &args) != nil || bytes.Equal(bytes.TrimSpace(a), []byte("null")) {
			return nil, genericErr("QMP input member 'arguments' must be an object")
		}
	}
	noArgs := func() *qmpErr {
		for k := range args {
			return genericErr("Parameter '%s' is unexpected", k)
		}
		return nil
	}

	v.qmpMu.Lock()
	neg := v.qmpNeg
	v.qmpMu.Unlock()
	if cmd == "qmp_capabilities" {
		if neg {
			return nil, &qmpErr{"CommandNotFound", "Capabilities negotiation is already complete, command ignored"}
		}
		for k, a := range args {
			var enable []string
			if k != "enable" {
				return nil, genericErr("Parameter '%s' is unexpected", k)
			}
			if json.Unmarshal(a, &enable) != nil {
				return nil, genericErr("Invalid parameter type for 'enable', expected: array")
			}
			for _, e := range enable {
				if e != "oob" {
					return nil, genericErr("Parameter 'enable' does not accept value '%s'", e)
				}
			}
		}
		v.qmpMu.Lock()
		if v.qmpC == c {
			v.qmpNeg = true
		}
		v.qmpMu.Unlock()
		return struct{}{}, nil
	}
	if !neg {
		return nil, &qmpErr{"CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'"}
	}
	switch cmd {
	case "query-status":
		if e := noArgs(); e != nil {
			return nil, e
		}
		return map[string]any{"status": "running", "singlestep": false, "running": true}, nil
	case "system_powerdown", "quit":
		if e := noArgs(); e != nil {
			return nil, e
		}
		return struct{}{}, nil
	case "send-key":
		if _, err := parseKeys(args); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
	return nil, &qmpErr{"CommandNotFound", fmt.Sprintf("The command %s has not been found", cmd)}
}

// after does what a command that succeeded sets off, once its reply is
// out: the guest's poweroff, QEMU's exit.
func (v *vm) after(req map[string]json.RawMessage) {
	var cmd string
	json.Unmarshal(req["execute"], &cmd)
	switch cmd {
	case "system_powerdown":
		v.emit("POWERDOWN", nil)
		// The fake's guest obeys the ACPI power button; banger's real
		// guests have no handler for it (see package qemu).
		go v.powerOff("guest-shutdown", true)
	case "quit":
		if !v.knobs.HangQuit {
			v.requestExit(exitReq{code: 0, guest: false, reason: "host-qmp-quit"})
		}
	case "send-key":
		var args map[string]json.RawMessage
		json.Unmarshal(req["arguments"], &args)
		if keys, err := parseKeys(args); err == nil && isCtrlAltDel(keys) {
			// banger's init took ctrl-alt-delete over (CAD_OFF): it
			// gets SIGINT and powers off.
			go v.powerOff("guest-shutdown", true)
		}
	}
}

// parseKeys reads send-key's arguments: the qcodes or numbers pressed.
func parseKeys(args map[string]json.RawMessage) ([]string, *qmpErr) {
	for k := range args {
		if k != "keys" && k != "hold-time" {
			return nil, genericErr("Parameter '%s' is unexpected", k)
		}
	}
	raw, ok := args["keys"]
	if !ok {
		return nil, genericErr("Parameter 'keys' is missing")
	}
	var keys []struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if json.Unmarshal(raw, &keys) != nil {
		return nil, genericErr("Invalid parameter type for 'keys', expected: array")
	}
	if ht, ok := args["hold-time"]; ok {
		var n int
		if json.Unmarshal(ht, &n) != nil {
			return nil, genericErr("Invalid parameter type for 'hold-time', expected: integer")
		}
	}
	var out []string
	for _, k := range keys {
		switch k.Type {
		case "qcode":
			var q string
			if json.Unmarshal(k.Data, &q) != nil {
				return nil, genericErr("Invalid parameter type for 'data', expected: string")
			}
			out = append(out, q)
		case "number":
			var n int
			if json.Unmarshal(k.Data, &n) != nil {
				return nil, genericErr("Invalid parameter type for 'data', expected: integer")
			}
			out = append(out, fmt.Sprintf("#%d", n))
		default:
			return nil, genericErr("Parameter 'type' does not accept value '%s'", k.Type)
		}
	}
	if len(out) == 0 {
		return nil, genericErr("Parameter 'keys' is missing")
	}
	return out, nil
}

// isCtrlAltDel reports whether keys press ctrl, alt and delete together.
func isCtrlAltDel(keys []string) bool {
	var ctrl, alt, del bool
	for _, k := range keys {
		switch strings.TrimSuffix(k, "_r") {
		case "ctrl":
			ctrl = true
		case "alt":
			alt = true
		case "delete":
			del = true
		}
	}
	return ctrl && alt && del
}
