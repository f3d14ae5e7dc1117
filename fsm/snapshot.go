package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// The snapshot format (version 2): newline-delimited JSON, one header, then
// one typed record per node and channel in sorted order (equal states write
// equal bytes), then an end record:
//
//	{"format":"sorad-fsm-snapshot","version":2,"min_reader":2,"index":42}
//	{"record":"node","data":{...}}
//	{"record":"channel","data":{...}}
//	{"record":"end","records":5}
//
// A reader skips a record type it does not know unless the record says
// "required": true, which refuses the snapshot with a clear error, and
// ignores fields it does not know inside a record; a snapshot whose
// min_reader is above the reader's version is refused. The end record
// counts the records before it, so a truncated snapshot is refused too.
// Version 1 was one JSON document ({"version":1,"index":..,"nodes":[..],
// "channels":[..]}); it is still read. doc.go has the rules a change of
// the format must keep.

// snapshotVersion is the snapshot format EncodeSnapshot writes, and the
// newest this version reads.
const snapshotVersion = 2

// snapshotFormat names the format in the header.
const snapshotFormat = "sorad-fsm-snapshot"

// Record types of format 2.
const (
	recordNode    = "node"
	recordChannel = "channel"
	recordEnd     = "end"
)

type snapshotHeader struct {
	Format    string `json:"format"`
	Version   int    `json:"version"`
	MinReader int    `json:"min_reader"`
	Index     uint64 `json:"index"`
}

type snapshotRecord struct {
	Record   string          `json:"record"`
	Required bool            `json:"required,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	Records  int             `json:"records,omitempty"` // of the end record
}

// EncodeSnapshot writes s, applied up to index, in the current snapshot
// format.
func EncodeSnapshot(w io.Writer, s *State, index uint64) error {
	enc := json.NewEncoder(w)
	if err := enc.Encode(snapshotHeader{Format: snapshotFormat, Version: snapshotVersion, MinReader: 2, Index: index}); err != nil {
		return fmt.Errorf("encode snapshot header: %w", err)
	}
	records := 0
	write := func(kind string, v any) error {
		data, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode snapshot %s: %w", kind, err)
		}
		if err := enc.Encode(snapshotRecord{Record: kind, Data: data}); err != nil {
			return fmt.Errorf("encode snapshot %s: %w", kind, err)
		}
		records++
		return nil
	}
	for _, n := range s.SortedNodes() {
		if err := write(recordNode, n); err != nil {
			return err
		}
	}
	for _, c := range s.SortedChannels() {
		if err := write(recordChannel, c); err != nil {
			return err
		}
	}
	if err := enc.Encode(snapshotRecord{Record: recordEnd, Records: records}); err != nil {
		return fmt.Errorf("encode snapshot end: %w", err)
	}
	return nil
}

// DecodeSnapshot reads a snapshot of any format this version knows (1 and
// 2), and of a later format whose min_reader allows it.
func DecodeSnapshot(r io.Reader) (*State, uint64, error) {
	dec := json.NewDecoder(r)
	var first json.RawMessage
	if err := dec.Decode(&first); err != nil {
		return nil, 0, fmt.Errorf("decode snapshot: %w", err)
	}
	var h snapshotHeader
	if err := json.Unmarshal(first, &h); err != nil {
		return nil, 0, fmt.Errorf("decode snapshot header: %w", err)
	}
	s := NewState()
	switch {
	case h.Format == "" && h.Version == 1:
		index, err := decodeSnapshotV1(first, s)
		return s, index, err
	case h.Format != snapshotFormat:
		return nil, 0, fmt.Errorf("decode snapshot: not a sorad snapshot (format %q, version %d)", h.Format, h.Version)
	case h.MinReader > snapshotVersion:
		return nil, 0, fmt.Errorf("decode snapshot: written by a newer sorad in format %d, readable from format %d on; this version reads up to %d", h.Version, h.MinReader, snapshotVersion)
	}
	records := 0
	for {
		var rec snapshotRecord
		if err := dec.Decode(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, 0, fmt.Errorf("decode snapshot record %d: %w", records+1, err)
		}
		switch rec.Record {
		case recordEnd:
			if rec.Records != records {
				return nil, 0, fmt.Errorf("decode snapshot: the end record counts %d records, %d came", rec.Records, records)
			}
			return s, h.Index, nil
		case recordNode:
			var n Node
			if err := json.Unmarshal(rec.Data, &n); err != nil {
				return nil, 0, fmt.Errorf("decode snapshot node: %w", err)
			}
			if err := addNode(s, n); err != nil {
				return nil, 0, err
			}
		case recordChannel:
			var c Channel
			if err := json.Unmarshal(rec.Data, &c); err != nil {
				return nil, 0, fmt.Errorf("decode snapshot channel: %w", err)
			}
			if err := addChannel(s, c); err != nil {
				return nil, 0, err
			}
		default:
			if rec.Required {
				return nil, 0, fmt.Errorf("decode snapshot: record %q, which a newer sorad wrote, is required and this version does not know it", rec.Record)
			}
		}
		records++
	}
}

// snapshotV1 is format 1: one document.
type snapshotV1 struct {
	Version  int       `json:"version"`
	Index    uint64    `json:"index"`
	Nodes    []Node    `json:"nodes"`
	Channels []Channel `json:"channels"`
}

func decodeSnapshotV1(doc []byte, s *State) (uint64, error) {
	var f snapshotV1
	if err := json.Unmarshal(doc, &f); err != nil {
		return 0, fmt.Errorf("decode snapshot (format 1): %w", err)
	}
	for _, n := range f.Nodes {
		if err := addNode(s, n); err != nil {
			return 0, err
		}
	}
	for _, c := range f.Channels {
		if err := addChannel(s, c); err != nil {
			return 0, err
		}
	}
	return f.Index, nil
}

func addNode(s *State, n Node) error {
	if _, dup := s.Nodes[n.Name]; dup || n.Name == "" {
		return fmt.Errorf("decode snapshot: bad or duplicate node %q", n.Name)
	}
	s.Nodes[n.Name] = n
	return nil
}

func addChannel(s *State, c Channel) error {
	if _, dup := s.Channels[c.ID]; dup || c.ID == "" {
		return fmt.Errorf("decode snapshot: bad or duplicate channel %q", c.ID)
	}
	s.Channels[c.ID] = c
	return nil
}
