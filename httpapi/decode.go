package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/sorad/sorad/media/signaling"
)

// Request bodies are decoded in two steps so each kind of bad input gets its
// own error: the body must be one JSON object (INVALID-JSON,
// INVALID-REQUEST-BODY); then each field the target knows is decoded on its
// own (INVALID-FIELD-TYPE names the field and the type it needs), required
// fields must be present and not null (MISSING-FIELD), and required strings
// must not be empty (INVALID-FIELD-VALUE). Unknown fields are ignored, as Sora
// ignores them.
//
// Request structs declare fields with a json tag and, when required, an api
// tag: `json:"channel_id" api:"required"`.

// jsonWhitespace is all RFC 8259 allows around a value; other Unicode
// spaces make a body that is not JSON.
const jsonWhitespace = " \t\r\n"

// decodeBody decodes body into a new T. An empty body counts as {}.
func decodeBody[T any](body []byte) (T, error) {
	var out T
	body = bytes.Trim(body, jsonWhitespace)
	if len(body) == 0 {
		body = []byte("{}")
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return out, apiErr(400, "INVALID-REQUEST-BODY", "the request body must be a JSON object")
		}
		return out, apiErr(400, "INVALID-JSON", "the request body is not valid JSON: "+err.Error())
	}
	if fields == nil { // the body was null
		return out, apiErr(400, "INVALID-REQUEST-BODY", "the request body must be a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return out, apiErr(400, "INVALID-JSON", "unexpected data after the JSON object")
	}
	v := reflect.ValueOf(&out).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		required := f.Tag.Get("api") == "required"
		raw, present := fields[name]
		if !present || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			if required {
				return out, apiErr(400, "MISSING-FIELD", fieldReason{Field: name, Expected: typeName(f.Type)})
			}
			continue
		}
		if err := json.Unmarshal(raw, v.Field(i).Addr().Interface()); err != nil {
			return out, apiErr(400, "INVALID-FIELD-TYPE", fieldReason{Field: name, Expected: typeName(f.Type)})
		}
		if str, ok := stringOf(v.Field(i)); ok {
			if required && str == "" {
				return out, apiErr(400, "INVALID-FIELD-VALUE", fieldReason{Field: name, Expected: "non-empty string"})
			}
			// json.Unmarshal turns invalid UTF-8 into U+FFFD: check the input.
			if len(str) > maxStringField || !utf8.Valid(raw) {
				return out, apiErr(400, "INVALID-FIELD-VALUE", fieldReason{Field: name, Expected: fmt.Sprintf("UTF-8 string of at most %d bytes", maxStringField)})
			}
		}
	}
	return out, nil
}

// maxStringField bounds every string field of a request, as signaling
// bounds channel_id, client_id and bundle_id.
const maxStringField = signaling.MaxIDLength

// stringOf returns the value of a string or *string field.
func stringOf(v reflect.Value) (string, bool) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() || v.Elem().Kind() != reflect.String {
			return "", false
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.String {
		return "", false
	}
	return v.String(), true
}

// maxEcho bounds how much of a caller's input an error reason repeats.
const maxEcho = 128

// clip returns at most maxEcho bytes of s, cut at a rune boundary, marked
// when cut.
func clip(s string) string {
	if len(s) <= maxEcho {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.ToValidUTF8(s[:cut], "\uFFFD") + "..."
}

type fieldReason struct {
	Field    string `json:"field"`
	Expected string `json:"expected"`
}

// jsonObject is a request field that must hold a JSON object.
type jsonObject json.RawMessage

func (o *jsonObject) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '{' {
		return errors.New("not an object")
	}
	*o = append((*o)[:0], b...)
	return nil
}

func (jsonObject) apiType() string { return "object" }

// jsonValue is a request field that may hold any JSON value.
type jsonValue json.RawMessage

func (v *jsonValue) UnmarshalJSON(b []byte) error {
	*v = append((*v)[:0], b...)
	return nil
}

func (jsonValue) apiType() string { return "any JSON value" }

type apiTyped interface{ apiType() string }

// typeName names a Go field type in JSON terms for error reasons.
func typeName(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if at, ok := reflect.Zero(t).Interface().(apiTyped); ok {
		return at.apiType()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	default:
		return "object"
	}
}
