// Package nfdelay delays packets in the kernel: an iptables rule sends them
// to a netfilter queue (-j NFQUEUE --queue-num N), and a Queue bound to that
// number holds each packet for a fixed delay before it lets it go on. It is
// the tests' packet delay where the kernel has no netem: it speaks the
// nfnetlink_queue protocol over a netlink socket (golang.org/x/sys/unix),
// asking only for each packet's id, never its contents.
package nfdelay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// nfnetlink_queue constants (linux/netfilter/nfnetlink_queue.h).
const (
	subsysQueue    = 3 // NFNL_SUBSYS_QUEUE
	msgPacket      = 0 // NFQNL_MSG_PACKET
	msgVerdict     = 1 // NFQNL_MSG_VERDICT
	msgConfig      = 2 // NFQNL_MSG_CONFIG
	attrCfgCmd     = 1 // NFQA_CFG_CMD
	attrCfgParams  = 2 // NFQA_CFG_PARAMS
	attrCfgMaxLen  = 3 // NFQA_CFG_QUEUE_MAXLEN
	attrPacketHdr  = 1 // NFQA_PACKET_HDR
	attrVerdictHdr = 2 // NFQA_VERDICT_HDR
	cmdBind        = 1 // NFQNL_CFG_CMD_BIND
	copyMeta       = 1 // NFQNL_COPY_META
	nfAccept       = 1 // NF_ACCEPT
	// queueMaxLen is how many packets the kernel keeps waiting for a
	// verdict; more are dropped.
	queueMaxLen = 8192
)

// Queue holds the packets of one netfilter queue for a fixed delay.
type Queue struct {
	fd    int
	num   uint16
	delay time.Duration

	pending chan held
	done    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex // serialises writes to fd
	closed  bool
}

type held struct {
	id  uint32
	due time.Time
}

// Open binds netfilter queue num and starts delaying its packets by delay.
// Packets queued before Close are let go when their delay is over or at
// Close, whichever comes first.
func Open(num uint16, delay time.Duration) (*Queue, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nfdelay: netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nfdelay: bind netlink socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	// A receive timeout lets the reader see Close.
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
	q := &Queue{fd: fd, num: num, delay: delay, pending: make(chan held, queueMaxLen), done: make(chan struct{})}
	params := make([]byte, 5)
	params[4] = copyMeta // copy_range 0: no payload
	maxLen := binary.BigEndian.AppendUint32(nil, queueMaxLen)
	for _, attrs := range [][]byte{
		attr(attrCfgCmd, []byte{cmdBind, 0, 0, unix.AF_INET}),
		append(attr(attrCfgParams, params), attr(attrCfgMaxLen, maxLen)...),
	} {
		if err := q.request(msgConfig, attrs); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("nfdelay: configure queue %d: %w", num, err)
		}
	}
	q.wg.Add(2)
	go q.read()
	go q.release()
	return q, nil
}

// Close lets every held packet go and unbinds the queue (the kernel drops
// the queue's packets while nobody listens, unless the rule says
// --queue-bypass: remove the rule first).
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	close(q.done)
	q.wg.Wait()
	return unix.Close(q.fd)
}

// read receives the queued packets' ids.
func (q *Queue) read() {
	defer q.wg.Done()
	defer close(q.pending)
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-q.done:
			return
		default:
		}
		n, _, err := unix.Recvfrom(q.fd, buf, 0)
		if err != nil {
			continue // timeout, or ENOBUFS (the kernel dropped what did not fit)
		}
		for msg := buf[:n]; len(msg) >= unix.NLMSG_HDRLEN; {
			length := int(binary.NativeEndian.Uint32(msg[0:4]))
			if length < unix.NLMSG_HDRLEN || length > len(msg) {
				break
			}
			typ := binary.NativeEndian.Uint16(msg[4:6])
			if typ == subsysQueue<<8|msgPacket {
				if id, ok := packetID(msg[unix.NLMSG_HDRLEN+4 : length]); ok {
					select {
					case q.pending <- held{id: id, due: time.Now().Add(q.delay)}:
					default:
						q.verdict(id) // more than the queue holds: let it go now
					}
				}
			}
			msg = msg[min(align(length), len(msg)):]
		}
	}
}

// release gives each packet its verdict when its delay is over, in arrival
// order (the delay is the same for every packet).
func (q *Queue) release() {
	defer q.wg.Done()
	for p := range q.pending {
		if wait := time.Until(p.due); wait > 0 {
			select {
			case <-time.After(wait):
			case <-q.done:
			}
		}
		q.verdict(p.id)
	}
}

func (q *Queue) verdict(id uint32) {
	hdr := binary.BigEndian.AppendUint32(nil, nfAccept)
	hdr = binary.BigEndian.AppendUint32(hdr, id)
	q.mu.Lock()
	defer q.mu.Unlock()
	_ = unix.Sendto(q.fd, message(msgVerdict, q.num, unix.NLM_F_REQUEST, attr(attrVerdictHdr, hdr)), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// request sends a configuration message and waits for its acknowledgement.
func (q *Queue) request(typ uint16, attrs []byte) error {
	if err := unix.Sendto(q.fd, message(typ, q.num, unix.NLM_F_REQUEST|unix.NLM_F_ACK, attrs), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(q.fd, buf, 0)
		if err != nil {
			continue
		}
		if n < unix.NLMSG_HDRLEN+4 || binary.NativeEndian.Uint16(buf[4:6]) != unix.NLMSG_ERROR {
			continue
		}
		if code := int32(binary.NativeEndian.Uint32(buf[unix.NLMSG_HDRLEN : unix.NLMSG_HDRLEN+4])); code != 0 {
			return unix.Errno(-code)
		}
		return nil
	}
	return errors.New("no acknowledgement")
}

// message builds a netlink message of the queue subsystem: header,
// nfgenmsg (family unspecified, version 0, the queue number big-endian),
// attributes.
func message(typ, num uint16, flags uint16, attrs []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+4+len(attrs))
	b = append(b, unix.AF_UNSPEC, 0)
	b = binary.BigEndian.AppendUint16(b, num)
	b = append(b, attrs...)
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], subsysQueue<<8|typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	return b
}

// attr encodes one netlink attribute, padded to four bytes.
func attr(typ uint16, payload []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(payload)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// packetID finds NFQA_PACKET_HDR among a packet message's attributes.
func packetID(attrs []byte) (uint32, bool) {
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs[0:2]))
		typ := binary.NativeEndian.Uint16(attrs[2:4]) & 0x3fff // without the nested and byte-order flags
		if l < 4 || l > len(attrs) {
			return 0, false
		}
		if typ == attrPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(attrs[4:8]), true
		}
		attrs = attrs[min(align(l), len(attrs)):]
	}
	return 0, false
}

func align(n int) int { return (n + 3) &^ 3 }
