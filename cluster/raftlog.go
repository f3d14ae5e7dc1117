package cluster

import (
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// slogHCLog lets hashicorp/raft log through the node's slog logger, so every
// line has one format. Raft's Info is chatty (every state change); it is
// mapped one level down unless the operator asked for debug logs.
type slogHCLog struct {
	log  *slog.Logger
	name string
	args []any
}

func newRaftLogger(l *slog.Logger) hclog.Logger {
	return &slogHCLog{log: l.With("component", "raft"), name: "raft"}
}

func (h *slogHCLog) level(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug - 4
	case hclog.Info:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (h *slogHCLog) enabled(l hclog.Level) bool {
	return h.log.Enabled(context.Background(), h.level(l))
}

func (h *slogHCLog) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off || !h.enabled(level) {
		return
	}
	h.log.Log(context.Background(), h.level(level), msg, append(append([]any{}, h.args...), args...)...)
}

func (h *slogHCLog) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *slogHCLog) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *slogHCLog) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *slogHCLog) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *slogHCLog) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }
func (h *slogHCLog) IsTrace() bool                 { return h.enabled(hclog.Trace) }
func (h *slogHCLog) IsDebug() bool                 { return h.enabled(hclog.Debug) }
func (h *slogHCLog) IsInfo() bool                  { return h.enabled(hclog.Info) }
func (h *slogHCLog) IsWarn() bool                  { return h.enabled(hclog.Warn) }
func (h *slogHCLog) IsError() bool                 { return h.enabled(hclog.Error) }
func (h *slogHCLog) ImpliedArgs() []any            { return h.args }
func (h *slogHCLog) Name() string                  { return h.name }
func (h *slogHCLog) SetLevel(hclog.Level)          {}
func (h *slogHCLog) GetLevel() hclog.Level         { return hclog.Info }

func (h *slogHCLog) With(args ...any) hclog.Logger {
	return &slogHCLog{log: h.log, name: h.name, args: append(append([]any{}, h.args...), args...)}
}

func (h *slogHCLog) Named(name string) hclog.Logger {
	return &slogHCLog{log: h.log, name: h.name + "." + name, args: h.args}
}

func (h *slogHCLog) ResetNamed(name string) hclog.Logger {
	return &slogHCLog{log: h.log, name: name, args: h.args}
}

func (h *slogHCLog) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(h.log.Handler(), slog.LevelWarn)
}

func (h *slogHCLog) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return h.StandardLogger(opts).Writer()
}
