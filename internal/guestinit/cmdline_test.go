package guestinit

import (
	"crypto/ed25519"
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func testAuthKey(t *testing.T, seed byte) (ssh.PublicKey, string) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(append([]byte{seed}, make([]byte, 31)...))
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " user@host"
}

func TestParseCmdline(t *testing.T) {
	key1, line1 := testAuthKey(t, 1)
	key2, line2 := testAuthKey(t, 2)
	std := base64.StdEncoding.EncodeToString([]byte(line1))
	url := base64.RawURLEncoding.EncodeToString([]byte(line2))
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr

	tests := []struct {
		name    string
		cmdline string
		want    Config
		errs    []string // substrings the error must hold; none: no error
	}{
		{name: "empty", cmdline: ""},
		{name: "no banger params", cmdline: "console=ttyS0 root=/dev/vda rw init=/.banger/init"},
		{
			name:    "full",
			cmdline: "console=ttyS0 banger.ip=10.88.0.5/24 banger.gw=10.88.0.1 banger.dns=10.88.0.1,1.1.1.1 banger.hostname=dev-1 banger.domain=vm.banger banger.mtu=1400 banger.authkey=" + std + " banger.authkey=" + url + " banger.entrypoint=1 banger.debug\n",
			want: Config{
				Address: pfx("10.88.0.5/24"), Gateway: addr("10.88.0.1"),
				DNS:      []netip.Addr{addr("10.88.0.1"), addr("1.1.1.1")},
				Hostname: "dev-1", Domain: "vm.banger", MTU: 1400,
				AuthorizedKeys: []ssh.PublicKey{key1, key2},
				Entrypoint:     true, Debug: true,
			},
		},
		{name: "ipv6", cmdline: "banger.ip=fd00::5/64 banger.gw=fd00::1", want: Config{Address: pfx("fd00::5/64"), Gateway: addr("fd00::1")}},
		{name: "quoted value", cmdline: `banger.hostname="box" x="a b" banger.debug=false`, want: Config{Hostname: "box"}},
		{name: "last wins", cmdline: "banger.mtu=1500 banger.mtu=9000", want: Config{MTU: 9000}},
		{name: "padded url-safe key", cmdline: "banger.authkey=" + base64.URLEncoding.EncodeToString([]byte(line2)), want: Config{AuthorizedKeys: []ssh.PublicKey{key2}}},
		{name: "unknown key", cmdline: "banger.colour=blue banger.mtu=1500", want: Config{MTU: 1500}, errs: []string{"banger.colour: unknown parameter"}},
		{name: "ip without prefix", cmdline: "banger.ip=10.88.0.5 banger.gw=10.88.0.1", errs: []string{"banger.ip:", "banger.gw: no banger.ip"}},
		{name: "gw of other family", cmdline: "banger.ip=10.88.0.5/24 banger.gw=fd00::1", want: Config{Address: pfx("10.88.0.5/24")}, errs: []string{"not of banger.ip's family"}},
		{name: "bad dns entry skipped", cmdline: "banger.dns=10.0.0.1,nope,10.0.0.2", want: Config{DNS: []netip.Addr{addr("10.0.0.1"), addr("10.0.0.2")}}, errs: []string{"banger.dns"}},
		{name: "bad hostname", cmdline: "banger.hostname=-bad banger.hostname=a_b", errs: []string{`"-bad" is not a valid host name`, `"a_b"`}},
		{name: "bad domain", cmdline: "banger.domain=vm..banger", errs: []string{"not a valid domain"}},
		{name: "mtu out of range", cmdline: "banger.mtu=20 banger.mtu=x", errs: []string{`"20" is not an MTU`, `"x" is not an MTU`}},
		{name: "authkey not base64", cmdline: "banger.authkey=***", errs: []string{"not base64"}},
		{name: "authkey not a key", cmdline: "banger.authkey=" + base64.StdEncoding.EncodeToString([]byte("hello")), errs: []string{"not an authorized_keys line"}},
		{name: "bad boolean", cmdline: "banger.entrypoint=maybe", errs: []string{`"maybe" is not a boolean`}},
		{name: "missing value", cmdline: "banger.ip banger.hostname=", errs: []string{"banger.ip: needs a value", "banger.hostname:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCmdline(tt.cmdline)
			if len(tt.errs) == 0 && err != nil {
				t.Errorf("unexpected error: %v", err)
			}
			if len(tt.errs) > 0 && err == nil {
				t.Errorf("no error, want one holding %q", tt.errs)
			}
			for _, want := range tt.errs {
				if err != nil && !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not hold %q", err, want)
				}
			}
			if !configEqual(got, tt.want) {
				t.Errorf("config\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func configEqual(a, b Config) bool {
	if a.Address != b.Address || a.Gateway != b.Gateway || a.Hostname != b.Hostname ||
		a.Domain != b.Domain || a.MTU != b.MTU || a.Entrypoint != b.Entrypoint || a.Debug != b.Debug ||
		len(a.DNS) != len(b.DNS) || len(a.AuthorizedKeys) != len(b.AuthorizedKeys) {
		return false
	}
	for i := range a.DNS {
		if a.DNS[i] != b.DNS[i] {
			return false
		}
	}
	for i := range a.AuthorizedKeys {
		if string(a.AuthorizedKeys[i].Marshal()) != string(b.AuthorizedKeys[i].Marshal()) {
			return false
		}
	}
	return true
}

func TestSplitCmdline(t *testing.T) {
	got := splitCmdline(` a  b="c d" "e f"g  h= ` + "\n")
	want := []string{"a", "b=c d", "e fg", "h="}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
}
