package guestinit

import (
	"reflect"
	"strings"
	"testing"
)

const testPasswd = `root:x:0:0:root:/root:/bin/bash
# a comment

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
dev:x:1000:1000:Dev,,,:/home/dev:/bin/zsh
broken line
bad:x:notanumber:0::/:/bin/sh
nohome:x:1001:1001:::
`

const testGroup = `root:x:0:
adm:x:4:dev
tty:x:5:
docker:x:999:dev, other
dev:x:1000:
wheel:x:10:root
`

func TestResolveUser(t *testing.T) {
	tests := []struct {
		spec    string
		want    guestUser
		wantErr string
	}{
		{spec: "", want: guestUser{Name: "root", UID: 0, GID: 0, Groups: []uint32{0, 10}, Home: "/root", Shell: "/bin/bash"}},
		{spec: "root", want: guestUser{Name: "root", UID: 0, GID: 0, Groups: []uint32{0, 10}, Home: "/root", Shell: "/bin/bash"}},
		{spec: "dev", want: guestUser{Name: "dev", UID: 1000, GID: 1000, Groups: []uint32{1000, 4, 999}, Home: "/home/dev", Shell: "/bin/zsh"}},
		{spec: "1000", want: guestUser{Name: "dev", UID: 1000, GID: 1000, Groups: []uint32{1000, 4, 999}, Home: "/home/dev", Shell: "/bin/zsh"}},
		{spec: "dev:tty", want: guestUser{Name: "dev", UID: 1000, GID: 5, Groups: []uint32{5, 4, 999}, Home: "/home/dev", Shell: "/bin/zsh"}},
		{spec: "dev:4", want: guestUser{Name: "dev", UID: 1000, GID: 4, Groups: []uint32{4, 999}, Home: "/home/dev", Shell: "/bin/zsh"}},
		{spec: "4242", want: guestUser{UID: 4242, GID: 0, Groups: []uint32{0}, Home: "/"}},
		{spec: "4242:4343", want: guestUser{UID: 4242, GID: 4343, Groups: []uint32{4343}, Home: "/"}},
		{spec: "nohome", want: guestUser{Name: "nohome", UID: 1001, GID: 1001, Groups: []uint32{1001}, Home: "/"}},
		{spec: "bad", wantErr: `user "bad": no such user`},
		{spec: "nobody", wantErr: `user "nobody": no such user`},
		{spec: "dev:nogroup", wantErr: `group "nogroup": no such group`},
		{spec: ":5", wantErr: "no user before the colon"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := resolveUser(tt.spec, []byte(testPasswd), []byte(testGroup))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestResolveUserWithoutFiles(t *testing.T) {
	// An image with no /etc/passwd still runs as root.
	got, err := resolveUser("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := guestUser{UID: 0, GID: 0, Groups: []uint32{0}, Home: "/"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestParseGroupMembers(t *testing.T) {
	g := parseGroup([]byte(testGroup))
	if len(g) != 6 || !reflect.DeepEqual(g[3].members, []string{"dev", "other"}) || g[2].members != nil {
		t.Errorf("parseGroup = %+v", g)
	}
}
