package webhook

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// crockford is Crockford's base32 alphabet: no I, L, O or U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// idLength is the length of every webhook id.
const idLength = 26

// TimestampLayout is the layout of the timestamp field: RFC 3339 in UTC
// with microseconds, as Sora writes it.
const TimestampLayout = "2006-01-02T15:04:05.000000Z"

// newID returns 128 random bits as 26 upper-case Crockford base32
// characters, the form of Sora's webhook ids.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	var out [idLength]byte
	// 26 characters hold 130 bits: the first carries the top 3 bits only.
	for i := idLength - 1; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// errNotObject is returned for a payload that does not marshal to a JSON
// object.
var errNotObject = errors.New("payload is not a JSON object")

// outgoing is one webhook request body, built once and sent on every
// attempt: a retry carries the same id.
type outgoing struct {
	id   string
	typ  string // the payload's "type", for logs; "" without one
	body []byte
}

// build marshals payload, which must be a JSON object, and sets the common
// fields on it, replacing any the payload has.
func (c *Client) build(payload any) (outgoing, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return outgoing{}, fmt.Errorf("marshal payload: %w", err)
	}
	if len(raw) == 0 || raw[0] != '{' {
		return outgoing{}, errNotObject
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return outgoing{}, fmt.Errorf("decode payload: %w", err)
	}
	out := outgoing{id: newID()}
	if t, ok := fields["type"]; ok {
		_ = json.Unmarshal(t, &out.typ) // a non-string type is the caller's business
	}
	common := map[string]string{
		"id":        out.id,
		"timestamp": time.Now().UTC().Format(TimestampLayout),
		"label":     c.cfg.Label,
		"version":   c.cfg.Version,
		"node_name": c.cfg.NodeName,
	}
	for k, v := range common {
		fields[k], err = json.Marshal(v)
		if err != nil {
			return outgoing{}, fmt.Errorf("marshal %s: %w", k, err)
		}
	}
	if out.body, err = json.Marshal(fields); err != nil {
		return outgoing{}, fmt.Errorf("marshal body: %w", err)
	}
	return out, nil
}

// sensitive reports whether key holds metadata, where clients and auth
// servers put secrets.
func sensitive(key string) bool {
	switch key {
	case "metadata", "event_metadata", "session_metadata",
		"authn_metadata", "authz_metadata", "auth_metadata":
		return true
	}
	return false
}

// redacted is what a sensitive value is logged as.
const redacted = `"REDACTED"`

// logBody is a JSON body as logged: the values of sensitive keys, at any
// depth, replaced unless sensitive is set. The work is done only when a
// record is actually written.
type logBody struct {
	body      []byte
	sensitive bool
}

func (b logBody) LogValue() slog.Value {
	if b.sensitive {
		return slog.StringValue(string(b.body))
	}
	out, err := redact(b.body)
	if err != nil {
		// Nothing of a body that cannot be read is shown: it may be a
		// secret.
		return slog.StringValue(fmt.Sprintf("(not JSON, %d bytes)", len(b.body)))
	}
	return slog.StringValue(string(out))
}

// redact returns v with the values of sensitive keys replaced, in objects
// at any depth. v itself is returned when nothing was replaced.
func redact(v json.RawMessage) (json.RawMessage, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return v, errors.New("empty")
	}
	switch v[0] {
	case '{':
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(v, &fields); err != nil {
			return nil, err
		}
		changed := false
		for k, f := range fields {
			if sensitive(k) {
				fields[k] = json.RawMessage(redacted)
				changed = true
				continue
			}
			r, err := redact(f)
			if err != nil {
				return nil, err
			}
			if !bytes.Equal(r, f) {
				fields[k] = r
				changed = true
			}
		}
		if !changed {
			return v, nil
		}
		return json.Marshal(fields)
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			return nil, err
		}
		changed := false
		for i, item := range items {
			r, err := redact(item)
			if err != nil {
				return nil, err
			}
			if !bytes.Equal(r, item) {
				items[i] = r
				changed = true
			}
		}
		if !changed {
			return v, nil
		}
		return json.Marshal(items)
	}
	if !json.Valid(v) {
		return nil, errors.New("invalid JSON")
	}
	return v, nil
}
