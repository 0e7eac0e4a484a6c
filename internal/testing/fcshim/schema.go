package fcshim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// A schema describes one JSON object body the way Firecracker decodes it:
// the swagger definition gives the names, types, required fields and enum
// values; Firecracker's serde structs add what the swagger leaves out
// (which unknown fields are refused, which fields may be null, the width
// of each integer). validate checks a body against it before any typed
// decoding, so every refusal has serde's reason, not encoding/json's
// leniency (which ignores unknown fields, takes the last of duplicate
// keys, reads null as "leave unchanged" and accepts 1.0 for an integer).
type schema struct {
	// definition is the swagger definition (and serde struct) mirrored.
	definition string
	fields     []field
	// allowUnknown mirrors a serde struct without deny_unknown_fields:
	// unknown keys are ignored (only TokenBucketConfig).
	allowUnknown bool
}

type kind int

const (
	kindString kind = iota
	kindBool
	kindUint
	kindObject
)

// A field is one property of a schema.
type field struct {
	name string
	kind kind
	// required: the serde field has no default and is not an Option, so
	// an absent key is "missing field" (the swagger's required list).
	required bool
	// nullable: the serde field is an Option, so null reads as absent. A
	// field that is neither required nor nullable has a serde default:
	// it may be absent but not null.
	nullable bool
	// bits is a kindUint's width (u8, u16, u64/usize).
	bits int
	// enum lists a kindString's allowed values (a serde enum's variants),
	// compared exactly unless foldCase; enumErr replaces serde's
	// "unknown variant" message when the type has a custom deserializer.
	enum     []string
	foldCase bool
	enumErr  string
	// parse, when set, checks a kindString's value (e.g. a MAC address).
	parse func(string) error
	// object is a kindObject's schema.
	object *schema
}

// decodeError is a body refused by a schema; its text follows serde_json's.
type decodeError struct{ msg string }

func (e *decodeError) Error() string { return e.msg }

func decodeErrf(format string, args ...any) error {
	return &decodeError{msg: fmt.Sprintf(format, args...)}
}

// validate checks that body is exactly one JSON object that s accepts.
func (s *schema) validate(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return decodeErrf("EOF while parsing a value")
		}
		return decodeErrf("%v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return decodeErrf("trailing characters")
	}
	return s.validateObject(raw)
}

func (s *schema) lookup(name string) *field {
	for i := range s.fields {
		if s.fields[i].name == name {
			return &s.fields[i]
		}
	}
	return nil
}

func (s *schema) validateObject(raw json.RawMessage) error {
	if first(raw) != '{' {
		return decodeErrf("invalid type: %s, expected struct %s", describe(raw), s.definition)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // the '{'
		return decodeErrf("%v", err)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return decodeErrf("%v", err)
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return decodeErrf("%v", err)
		}
		f := s.lookup(key)
		if f == nil {
			if s.allowUnknown {
				continue
			}
			return decodeErrf("unknown field `%s`, expected %s", key, s.expectedFields())
		}
		if seen[key] {
			return decodeErrf("duplicate field `%s`", key)
		}
		seen[key] = true
		if err := f.validate(val); err != nil {
			return err
		}
	}
	for _, f := range s.fields {
		if f.required && !seen[f.name] {
			return decodeErrf("missing field `%s`", f.name)
		}
	}
	return nil
}

func (s *schema) expectedFields() string {
	names := make([]string, len(s.fields))
	for i, f := range s.fields {
		names[i] = "`" + f.name + "`"
	}
	if len(names) == 1 {
		return names[0]
	}
	return "one of " + strings.Join(names, ", ")
}

func (f *field) validate(raw json.RawMessage) error {
	if first(raw) == 'n' {
		if f.nullable {
			return nil
		}
		return decodeErrf("invalid type: null, expected %s", f.expected())
	}
	switch f.kind {
	case kindString:
		var s string
		if first(raw) != '"' || json.Unmarshal(raw, &s) != nil {
			return decodeErrf("invalid type: %s, expected %s", describe(raw), f.expected())
		}
		if f.enum != nil && !f.inEnum(s) {
			if f.enumErr != "" {
				return decodeErrf("%s", f.enumErr)
			}
			return decodeErrf("unknown variant `%s`, expected %s", s, quoteList(f.enum))
		}
		if f.parse != nil {
			if err := f.parse(s); err != nil {
				return decodeErrf("%v", err)
			}
		}
	case kindBool:
		if c := first(raw); c != 't' && c != 'f' {
			return decodeErrf("invalid type: %s, expected a boolean", describe(raw))
		}
	case kindUint:
		c := first(raw)
		if c != '-' && (c < '0' || c > '9') {
			return decodeErrf("invalid type: %s, expected %s", describe(raw), f.expected())
		}
		num := string(bytes.TrimSpace(raw))
		if strings.ContainsAny(num, ".eE") {
			return decodeErrf("invalid type: floating point `%s`, expected %s", num, f.expected())
		}
		if _, err := strconv.ParseUint(num, 10, f.bits); err != nil {
			return decodeErrf("invalid value: integer `%s`, expected %s", num, f.expected())
		}
	case kindObject:
		return f.object.validateObject(raw)
	}
	return nil
}

func (f *field) inEnum(s string) bool {
	for _, v := range f.enum {
		if v == s || (f.foldCase && strings.EqualFold(v, s)) {
			return true
		}
	}
	return false
}

// expected names what serde expected, in its words.
func (f *field) expected() string {
	switch f.kind {
	case kindBool:
		return "a boolean"
	case kindUint:
		return "u" + strconv.Itoa(f.bits)
	case kindObject:
		return "struct " + f.object.definition
	}
	if f.enum != nil && f.enumErr == "" {
		return "enum"
	}
	return "a string"
}

func first(raw []byte) byte {
	b := bytes.TrimLeft(raw, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// describe names a JSON value the way serde's "invalid type" does.
func describe(raw json.RawMessage) string {
	v := string(bytes.TrimSpace(raw))
	switch c := first(raw); {
	case c == '"':
		return "string " + v
	case c == 't' || c == 'f':
		return "boolean `" + v + "`"
	case c == 'n':
		return "null"
	case c == '{':
		return "map"
	case c == '[':
		return "sequence"
	case strings.ContainsAny(v, ".eE"):
		return "floating point `" + v + "`"
	default:
		return "integer `" + v + "`"
	}
}

func quoteList(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = "`" + v + "`"
	}
	if len(q) == 1 {
		return q[0]
	}
	return "one of " + strings.Join(q, ", ")
}
