package guestinit

import (
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestEncodeArgvRoundTrip(t *testing.T) {
	for _, argv := range [][]string{
		{"/bin/echo", "a", "b c"},
		{"x", "", `"quoted" \ back`, "new\nline", "ünï"},
	} {
		cmd := EncodeArgv(argv)
		got, isArgv, err := decodeArgv(cmd)
		if err != nil || !isArgv || !reflect.DeepEqual(got, argv) {
			t.Errorf("decodeArgv(EncodeArgv(%q)) = %q, %v, %v", argv, got, isArgv, err)
		}
	}
	if _, isArgv, err := decodeArgv("echo hi"); isArgv || err != nil {
		t.Errorf("plain command taken for an argv: %v %v", isArgv, err)
	}
	for _, bad := range []string{argvPrefix + "[]", argvPrefix + "{", argvPrefix + `[""]`, argvPrefix + "null"} {
		if _, isArgv, err := decodeArgv(bad); !isArgv || err == nil {
			t.Errorf("decodeArgv(%q): isArgv %v, err %v; want a malformed-argv error", bad, isArgv, err)
		}
	}
}

func TestSignalNames(t *testing.T) {
	for name, sig := range sshSignals {
		if got, ok := parseSSHSignal(name); !ok || got != sig {
			t.Errorf("parseSSHSignal(%q) = %v, %v", name, got, ok)
		}
		if got := sshSignalName(sig); got != name {
			t.Errorf("sshSignalName(%v) = %q, want %q", sig, got, name)
		}
	}
	if sig, ok := parseSSHSignal("SIGTERM"); !ok || sig != unix.SIGTERM {
		t.Errorf("SIGTERM not accepted")
	}
	if _, ok := parseSSHSignal("BOGUS"); ok {
		t.Errorf("BOGUS accepted")
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "HOME=/"}, []string{"HOME=/root", "A=1"}, nil, []string{"PATH=/x", "bad", "=y", "A=2"})
	want := []string{"PATH=/x", "HOME=/root", "A=2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if v := envGet(got, "PATH"); v != "/x" {
		t.Errorf("envGet PATH = %q", v)
	}
}

func TestParseMountInfo(t *testing.T) {
	data := `22 1 254:0 / / ro,relatime shared:1 - ext4 /dev/vda ro
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw
30 22 0:40 / /mnt/with\040space rw - tmpfs tmpfs rw
31 22 0:41 / /mnt/x\134y rw - tmpfs tmpfs rw
`
	m := parseMountInfo([]byte(data))
	if !hasOption(m["/"], "ro") || hasOption(m["/dev"], "ro") {
		t.Errorf("options: %q", m)
	}
	for _, p := range []string{"/mnt/with space", `/mnt/x\y`} {
		if _, ok := m[p]; !ok {
			t.Errorf("%q missing from %q", p, m)
		}
	}
}

func TestParseStat(t *testing.T) {
	st, err := parseStat([]byte("1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 97 0 0 0\n"))
	if err != nil || st.state != 'S' || st.ppid != 1 || st.flags != 4194560 {
		t.Errorf("parseStat = %+v, %v", st, err)
	}
	st, err = parseStat([]byte("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0"))
	if err != nil || st.flags&pfKthread == 0 {
		t.Errorf("kthreadd not a kernel thread: %+v %v", st, err)
	}
	if _, err := parseStat([]byte("garbage")); err == nil {
		t.Errorf("garbage parsed")
	}
}

func TestIsInitPath(t *testing.T) {
	for arg0, want := range map[string]bool{
		"/.banger/init": true, "/.banger//init": true, "/sbin/init": false,
		"banger": false, "/.banger/init2": false,
	} {
		if got := isInitPath(arg0); got != want {
			t.Errorf("isInitPath(%q) = %v, want %v", arg0, got, want)
		}
	}
}

func TestRenderEtc(t *testing.T) {
	cfg, err := ParseCmdline("banger.hostname=dev banger.domain=vm.banger banger.dns=10.88.0.1,fd00::1")
	if err != nil {
		t.Fatal(err)
	}
	etc := t.TempDir()
	if err := writeIdentity(cfg, etc); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string][]string{
		"hostname":    {"dev\n"},
		"hosts":       {"127.0.0.1\tlocalhost\n", "127.0.1.1\tdev.vm.banger dev\n", "::1\tlocalhost"},
		"resolv.conf": {"nameserver 10.88.0.1\nnameserver fd00::1\nsearch vm.banger\n"},
	} {
		data := readFile(t, etc+"/"+file)
		for _, w := range want {
			if !strings.Contains(data, w) {
				t.Errorf("%s = %q, missing %q", file, data, w)
			}
		}
	}
	if got := renderHosts("solo", ""); !strings.Contains(got, "127.0.1.1\tsolo\n") {
		t.Errorf("renderHosts without domain: %q", got)
	}
}
