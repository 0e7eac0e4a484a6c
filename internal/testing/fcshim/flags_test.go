package fcshim

import (
	"bytes"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		want    parsedFlags
		wantErr string
	}{
		{[]string{"--api-sock", "/s", "--id", "vm-1"}, parsedFlags{"api-sock": "/s", "id": "vm-1"}, ""},
		// What the jailer passes after its "--".
		{[]string{"--id", "vm-1", "--start-time-us", "1", "--start-time-cpu-us", "2", "--parent-cpu-time-us", "3", "--api-sock", "/run/fc.sock"},
			parsedFlags{"id": "vm-1", "start-time-us": "1", "start-time-cpu-us": "2", "parent-cpu-time-us": "3", "api-sock": "/run/fc.sock"}, ""},
		{[]string{"--no-seccomp", "--boot-timer", "--show-level", "--level", "Debug"}, parsedFlags{"no-seccomp": "", "boot-timer": "", "show-level": "", "level": "Debug"}, ""},
		{[]string{"--api-sock", "/s", "--", "--anything", "goes"}, parsedFlags{"api-sock": "/s"}, ""},
		{[]string{"--api-sock", "/s", "--version"}, parsedFlags{"version": ""}, ""},
		{[]string{"--bogus", "-h"}, parsedFlags{"help": ""}, ""},
		{[]string{"--bogus"}, nil, "Found argument 'bogus' which wasn't expected, or isn't valid in this context."},
		{[]string{"api-sock", "/s"}, nil, "Found argument 'api-sock' which wasn't expected"},
		{[]string{"--api-sock=/s"}, nil, "Found argument 'api-sock=/s' which wasn't expected"},
		{[]string{"--id", "a", "--id", "b"}, nil, "The argument 'id' was provided more than once."},
		{[]string{"--api-sock"}, nil, "The argument 'api-sock' requires a value, but none was supplied."},
		{[]string{"--api-sock", "--id", "x"}, nil, "The argument 'api-sock' requires a value"},
	}
	for _, tt := range tests {
		got, err := parseFlags(tt.args)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("parseFlags(%q) = %v, %v; want error %q", tt.args, got, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || !reflect.DeepEqual(got, tt.want)):
			t.Errorf("parseFlags(%q) = %v, %v; want %v", tt.args, got, err, tt.want)
		}
	}
}

// TestRunRefuses covers the command lines run refuses before serving.
func TestRunRefuses(t *testing.T) {
	dir := t.TempDir()
	busy := filepath.Join(dir, "busy.sock")
	ln, err := net.Listen("unix", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"unknown argument", []string{"--api-sock", "/s", "--cpus", "2"}, 153, "Found argument 'cpus'"},
		{"bad instance id", []string{"--api-sock", filepath.Join(dir, "a.sock"), "--id", "vm_1"}, 1, "Invalid instance ID"},
		{"instance id too long", []string{"--id", strings.Repeat("a", 65)}, 1, "Invalid len (65)"},
		{"bad log level", []string{"--level", "loud"}, 152, "InvalidLogLevel"},
		{"not emulated", []string{"--api-sock", "/s", "--config-file", "/vm.json"}, 1, "does not emulate --config-file"},
		{"socket exists", []string{"--api-sock", busy, "--id", "vm-1"}, 1, "FailedToBindSocket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(tt.args, &out, &errb); code != tt.code || !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("run(%q) = %d, stderr %q; want %d and %q", tt.args, code, errb.String(), tt.code, tt.stderr)
			}
		})
	}
	var out, errb bytes.Buffer
	if code := run([]string{"--version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "Firecracker v"+VMMVersion) {
		t.Errorf("--version: %d %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "TEST-ONLY") || !strings.Contains(out.String(), "--api-sock <value>") {
		t.Errorf("--help: %d %q", code, out.String())
	}
}
