// SPDX-License-Identifier: MIT
/*
 * The PIIX3 USB host controller (UHCI 1.1; Intel 8086:7020, function 2 of
 * the PIIX3 on a real i440FX board): 32 bytes of registers in I/O BAR4, a
 * 1024-entry frame list in guest memory whose entries lead to transfer
 * descriptors (TDs) and queue heads (QHs), two root hub ports.  Chosen
 * over xHCI because the guests we run (Linux's uhci_hcd, SeaBIOS) drive it
 * with a tenth of the state: no rings, no contexts, no doorbells, no MSI.
 *
 * Frames: one per millisecond while the controller runs.  A thread walks
 * the frames that are due; after a frame in which nothing was transferred
 * it sleeps longer and longer (up to IDLE_INTERVAL_MAX frames), then walks
 * every frame it skipped, so an idle schedule costs a few dozen wake-ups a
 * second and a stopped or suspended controller none.  A device with
 * something to send, a guest reading FRNUM and the guest starting the
 * controller bring it back at once: a frame number the guest has seen was
 * always walked (Linux frees QHs once the frame number moved past them).
 *
 * A hostile schedule: each frame follows at most LINKS_PER_FRAME links and
 * moves at most BYTES_PER_FRAME bytes (a link cycle, which Linux builds on
 * purpose for bandwidth reclamation, just ends the frame); a link, frame
 * list or buffer outside guest RAM halts the controller with Host System
 * Error, an illegal PID or length with Host Controller Process Error, as
 * the hardware does (UHCI 1.1 section 2.1.2), and says so once on stderr.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmm/devices/usb.h"
#include "vmm/machine.h"

#define UHCI_VENDOR 0x8086
#define UHCI_DEVICE 0x7020
#define UHCI_CLASS 0x0c0300 /* serial bus, USB, UHCI */
#define UHCI_IO_BAR 4
#define UHCI_IO_SIZE 32
#define PCI_COMMAND_MASTER 0x4
#define PCI_INTERRUPT_PIN 0x3d
#define UHCI_PCI_SBRN 0x60   /* serial bus release number */
#define UHCI_PCI_LEGSUP 0xc0 /* legacy support (keyboard emulation off) */

/* I/O registers (UHCI 1.1 section 2.1) */
#define REG_USBCMD 0x00
#define REG_USBSTS 0x02
#define REG_USBINTR 0x04
#define REG_FRNUM 0x06
#define REG_FRBASEADD 0x08
#define REG_SOFMOD 0x0c
#define REG_PORTSC 0x10

#define CMD_RS 0x0001
#define CMD_HCRESET 0x0002
#define CMD_GRESET 0x0004
#define CMD_EGSM 0x0008
#define CMD_FGR 0x0010
#define CMD_MASK 0x00ff

#define STS_USBINT 0x0001
#define STS_ERROR 0x0002
#define STS_RESUME 0x0004
#define STS_HSE 0x0008
#define STS_HCPE 0x0010
#define STS_HALTED 0x0020
#define STS_WRITE_CLEAR 0x001f

#define INTR_TIMEOUT_CRC 0x1
#define INTR_RESUME 0x2
#define INTR_IOC 0x4
#define INTR_SHORT 0x8

#define PORT_CCS 0x0001
#define PORT_CSC 0x0002
#define PORT_PE 0x0004
#define PORT_PEC 0x0008
#define PORT_LINE_J 0x0010 /* D+ high: a full-speed device idles in J */
#define PORT_RD 0x0040
#define PORT_ALWAYS_ONE 0x0080
#define PORT_PR 0x0200
#define PORT_SUSP 0x1000
#define PORT_WRITABLE (PORT_PE | PORT_RD | PORT_PR | PORT_SUSP)
#define PORT_WRITE_CLEAR (PORT_CSC | PORT_PEC)

/* link pointers (section 3.1-3.3) */
#define LINK_TERMINATE 0x1u
#define LINK_QH 0x2u
#define LINK_DEPTH_FIRST 0x4u
#define LINK_ADDRESS 0xfffffff0u

/* TD control and status (section 3.2.2) */
#define TD_ACTUAL_LENGTH 0x7ffu
#define TD_CRC_TIMEOUT (1u << 18)
#define TD_NAK (1u << 19)
#define TD_BABBLE (1u << 20)
#define TD_STALLED (1u << 22)
#define TD_ACTIVE (1u << 23)
#define TD_IOC (1u << 24)
#define TD_ERRORS_SHIFT 27
#define TD_SPD (1u << 29)

/* TD token (section 3.2.3); MaxLen is length - 1, 0x7ff for none, and
 * 0x500-0x7fe are illegal */
#define TOKEN_MAXLEN_NONE 0x7ffu
#define TD_MAX_BYTES 1280u

#define FRAME_NS 1000000ull
#define FRAME_LIST_ENTRIES 1024
#define LINKS_PER_FRAME 512
#define BYTES_PER_FRAME TD_MAX_BYTES
#define IDLE_INTERVAL_MAX 16
/* more frames than this behind (the host was busy): the older ones are
 * skipped, as if the bus had been idle then */
#define CATCH_UP_FRAMES 32
#define QUEUE_NESTING_MAX 2

enum td_result {
	TD_COMPLETED, /* done: a queue moves on to the next TD */
	TD_RETRY,     /* still active (NAK, or a timeout with retries left) */
	TD_STOPPED,   /* inactive, or it stopped its queue (error, short) */
	TD_FRAME_FULL,
	TD_HALTED, /* the controller halted on this schedule */
};

struct uhci;

struct uhci_port {
	struct uhci *uhci;
	uint16_t sc;
	struct usb_device *dev;
};

struct uhci {
	struct vmm *vm;
	struct pci_device pci;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool thread_started;
	bool stopping;
	bool manual; /* no thread: uhci_advance runs the frames */
	uint64_t manual_ns;

	uint16_t cmd, sts, intr;
	uint32_t frbase;
	uint8_t sofmod;
	/* what set USBINT, for the interrupt enables */
	bool ioc_pending, short_pending;
	bool irq_level;
	struct uhci_port ports[UHCI_PORTS];

	/* frames: while running, frame number n starts at
	 * base_ns + (n - base_frame) ms; next_frame is the first one not
	 * walked yet; stopped, FRNUM is base_frame */
	uint64_t base_frame;
	uint64_t base_ns;
	uint64_t next_frame;
	unsigned interval; /* frames to sleep after the last walk */
	bool kicked;
	uint64_t frames_walked;

	/* the frame being walked */
	unsigned links;
	unsigned bytes_left;
	bool busy;
	uint8_t bounce[TD_MAX_BYTES];

	bool error_reported;
};

static uint64_t uhci_clock(struct uhci *u)
{
	struct timespec ts;

	if (u->manual)
		return u->manual_ns;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static bool uhci_running(const struct uhci *u)
{
	return (u->cmd & CMD_RS) && !(u->sts & STS_HALTED) &&
	       !(u->cmd & CMD_EGSM);
}

static uint64_t current_frame(struct uhci *u, uint64_t now)
{
	if (!uhci_running(u) || now < u->base_ns)
		return u->base_frame;
	return u->base_frame + (now - u->base_ns) / FRAME_NS;
}

static void update_irq(struct uhci *u)
{
	bool level = ((u->sts & STS_USBINT) &&
		      ((u->ioc_pending && (u->intr & INTR_IOC)) ||
		       (u->short_pending && (u->intr & INTR_SHORT)))) ||
		     ((u->sts & STS_ERROR) && (u->intr & INTR_TIMEOUT_CRC)) ||
		     ((u->sts & STS_RESUME) && (u->intr & INTR_RESUME)) ||
		     (u->sts & (STS_HSE | STS_HCPE));

	if (level != u->irq_level) {
		u->irq_level = level;
		pci_set_intx(&u->pci, level);
	}
}

static void stop_frames(struct uhci *u, uint64_t now)
{
	u->base_frame = current_frame(u, now);
	if (u->base_frame < u->next_frame)
		u->base_frame = u->next_frame;
}

/* The schedule is broken: halt as the hardware does, say why once. */
static enum td_result uhci_halt(struct uhci *u, uint16_t error, const char *fmt,
				...)
{
	char why[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	stop_frames(u, uhci_clock(u));
	u->cmd &= ~CMD_RS;
	u->sts |= error | STS_HALTED;
	if (!u->error_reported) {
		u->error_reported = true;
		fprintf(stderr,
			"imgvm: USB controller: %s; halted with %s "
			"(further schedule errors are not reported)\n",
			why,
			error == STS_HSE ? "host system error"
					 : "host controller process error");
	}
	return TD_HALTED;
}

static void raise_usbint(struct uhci *u, bool short_packet)
{
	u->sts |= STS_USBINT;
	if (short_packet)
		u->short_pending = true;
	else
		u->ioc_pending = true;
}

static uint32_t load32(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void store32(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* ---- devices -----------------------------------------------------------*/

static struct usb_device *find_device(struct uhci *u, unsigned address)
{
	for (unsigned i = 0; i < UHCI_PORTS; i++) {
		const struct uhci_port *p = &u->ports[i];

		if (p->dev && (p->sc & PORT_PE) &&
		    !(p->sc & (PORT_SUSP | PORT_PR)) &&
		    p->dev->address == address)
			return p->dev;
	}
	return NULL;
}

static void port_reset(struct uhci_port *p)
{
	p->sc = PORT_ALWAYS_ONE;
	if (p->dev) {
		p->sc |= PORT_CCS | PORT_CSC | PORT_LINE_J;
		p->dev->ops->reset(p->dev);
	}
}

/* ---- the schedule ------------------------------------------------------*/

static enum td_result td_timeout(struct uhci *u, uint32_t *td, uint32_t ctrl)
{
	unsigned errors = (ctrl >> TD_ERRORS_SHIFT) & 3;
	uint32_t updated = ctrl | TD_CRC_TIMEOUT;

	/* a count of 0 retries for ever */
	if (errors) {
		errors--;
		updated = (updated & ~(3u << TD_ERRORS_SHIFT)) |
			  errors << TD_ERRORS_SHIFT;
		if (!errors) {
			updated &= ~TD_ACTIVE;
			u->sts |= STS_ERROR;
			if (ctrl & TD_IOC)
				raise_usbint(u, false);
		}
	}
	if (updated != ctrl) {
		store32(&td[1], updated);
		u->busy = true;
	}
	return updated & TD_ACTIVE ? TD_RETRY : TD_STOPPED;
}

/* One TD at addr: its packet to the addressed device, the result written
 * back.  *link gets the TD's link pointer. */
static enum td_result run_td(struct uhci *u, uint32_t addr, uint32_t *link)
{
	uint32_t *td = vmm_gpa_to_hva(u->vm, addr, 16);
	uint32_t ctrl, token, buffer, len, maxlen, actual;
	struct usb_device *dev;
	struct usb_packet p;
	enum usb_handshake hs;
	uint8_t *data = NULL;
	unsigned pid;

	if (!td)
		return uhci_halt(u, STS_HSE, "TD at 0x%08x is outside RAM",
				 addr);
	*link = load32(&td[0]);
	ctrl = load32(&td[1]);
	token = load32(&td[2]);
	buffer = load32(&td[3]);
	if (!(ctrl & TD_ACTIVE)) {
		/* Linux's terminating TD is never active and asks for an
		 * interrupt this way */
		if (ctrl & TD_IOC) {
			raise_usbint(u, false);
			u->busy = true;
		}
		return TD_STOPPED;
	}
	pid = token & 0xff;
	if (pid != USB_PID_IN && pid != USB_PID_OUT && pid != USB_PID_SETUP)
		return uhci_halt(u, STS_HCPE, "TD at 0x%08x has PID 0x%02x",
				 addr, pid);
	maxlen = token >> 21;
	len = maxlen == TOKEN_MAXLEN_NONE ? 0 : maxlen + 1;
	if (len > TD_MAX_BYTES)
		return uhci_halt(u, STS_HCPE,
				 "TD at 0x%08x asks for %u bytes (at most %u)",
				 addr, len, TD_MAX_BYTES);
	if (len > u->bytes_left)
		return TD_FRAME_FULL;
	if (len) {
		data = vmm_gpa_to_hva(u->vm, buffer, len);
		if (!data)
			return uhci_halt(u, STS_HSE,
					 "TD at 0x%08x: its buffer 0x%08x+%u "
					 "is outside RAM",
					 addr, buffer, len);
	}
	dev = find_device(u, (token >> 8) & 0x7f);
	if (!dev)
		return td_timeout(u, td, ctrl);

	p = (struct usb_packet){
		.pid = pid,
		.endpoint = (token >> 15) & 0xf,
		.data = u->bounce,
		.len = len,
	};
	if (pid != USB_PID_IN && len)
		memcpy(u->bounce, data, len);
	hs = dev->ops->handle_packet(dev, &p);
	if (hs == USB_NAK) {
		if (!(ctrl & TD_NAK))
			store32(&td[1], ctrl | TD_NAK);
		return TD_RETRY;
	}
	actual = pid == USB_PID_IN ? (p.actual < len ? p.actual : len) : len;
	if (pid == USB_PID_IN && actual)
		memcpy(data, u->bounce, actual);
	u->bytes_left -= actual;
	u->busy = true;
	ctrl &= ~(TD_ACTIVE | TD_NAK | TD_ACTUAL_LENGTH);
	ctrl |= (actual - 1) & TD_ACTUAL_LENGTH;
	if (hs != USB_ACK) {
		ctrl |= TD_STALLED | (hs == USB_BABBLE ? TD_BABBLE : 0);
		store32(&td[1], ctrl);
		u->sts |= STS_ERROR;
		if (ctrl & TD_IOC)
			raise_usbint(u, false);
		return TD_STOPPED;
	}
	store32(&td[1], ctrl);
	if (ctrl & TD_IOC)
		raise_usbint(u, false);
	if (pid == USB_PID_IN && actual < len && (ctrl & TD_SPD)) {
		/* short packet: the queue stays on this TD for the driver */
		raise_usbint(u, true);
		return TD_STOPPED;
	}
	return TD_COMPLETED;
}

/* The TDs of the queue at qh_addr, from its element pointer: while they
 * complete with depth-first links, on down the queue. */
static enum td_result run_queue(struct uhci *u, uint32_t qh_addr,
				unsigned nesting)
{
	uint32_t *qh = vmm_gpa_to_hva(u->vm, qh_addr, 8);

	if (!qh)
		return uhci_halt(u, STS_HSE, "QH at 0x%08x is outside RAM",
				 qh_addr);
	for (;;) {
		uint32_t element = load32(&qh[1]), link;
		enum td_result r;

		if (element & LINK_TERMINATE)
			return TD_STOPPED;
		if (++u->links > LINKS_PER_FRAME)
			return TD_FRAME_FULL;
		if (element & LINK_QH) {
			/* a queue of queues: deeper nesting than this is
			 * skipped (no guest we know builds it) */
			if (nesting >= QUEUE_NESTING_MAX)
				return TD_STOPPED;
			r = run_queue(u, element & LINK_ADDRESS, nesting + 1);
			return r == TD_COMPLETED ? TD_STOPPED : r;
		}
		r = run_td(u, element & LINK_ADDRESS, &link);
		if (r != TD_COMPLETED)
			return r;
		store32(&qh[1], link);
		if (!(link & LINK_DEPTH_FIRST))
			return TD_COMPLETED;
	}
}

static void walk_frame(struct uhci *u, unsigned index)
{
	uint32_t entry_addr = u->frbase + 4 * index;
	uint32_t *entry, link;

	u->links = 0;
	u->bytes_left = BYTES_PER_FRAME;
	/* no bus mastering, no schedule */
	if (!(u->pci.config[4] & PCI_COMMAND_MASTER))
		return;
	entry = vmm_gpa_to_hva(u->vm, entry_addr, 4);
	if (!entry) {
		uhci_halt(u, STS_HSE, "the frame list at 0x%08x is outside RAM",
			  u->frbase);
		return;
	}
	link = load32(entry);
	while (!(link & LINK_TERMINATE)) {
		uint32_t addr = link & LINK_ADDRESS;
		enum td_result r;

		if (++u->links > LINKS_PER_FRAME)
			return;
		if (link & LINK_QH) {
			uint32_t *qh;

			r = run_queue(u, addr, 0);
			if (r == TD_FRAME_FULL || r == TD_HALTED)
				return;
			/* run_queue checked the address */
			qh = vmm_gpa_to_hva(u->vm, addr, 8);
			link = load32(&qh[0]);
		} else {
			r = run_td(u, addr, &link);
			if (r == TD_FRAME_FULL || r == TD_HALTED)
				return;
		}
	}
}

/* Walks the frames due by now; called with the lock held. */
static void run_frames(struct uhci *u, uint64_t now)
{
	uint64_t current;
	bool busy = false;

	if (!uhci_running(u))
		return;
	current = current_frame(u, now);
	if (current < u->next_frame)
		return;
	if (current - u->next_frame >= CATCH_UP_FRAMES)
		u->next_frame = current - CATCH_UP_FRAMES + 1;
	while (u->next_frame <= current && uhci_running(u)) {
		u->busy = false;
		walk_frame(u, u->next_frame % FRAME_LIST_ENTRIES);
		busy |= u->busy;
		u->next_frame++;
		u->frames_walked++;
	}
	if (busy)
		u->interval = 1;
	else if (u->interval < IDLE_INTERVAL_MAX)
		u->interval *= 2;
	update_irq(u);
}

static void *frame_thread(void *opaque)
{
	struct uhci *u = opaque;

	pthread_mutex_lock(&u->lock);
	while (!u->stopping) {
		uint64_t now, due;

		if (!uhci_running(u)) {
			u->kicked = false;
			pthread_cond_wait(&u->cond, &u->lock);
			continue;
		}
		now = uhci_clock(u);
		/* the start of the frame interval frames after the last */
		due = u->base_ns +
		      (u->next_frame + u->interval - 1 - u->base_frame) *
			      FRAME_NS;
		if (u->kicked && now < due)
			due = u->base_ns +
			      (u->next_frame - u->base_frame) * FRAME_NS;
		if (now < due) {
			struct timespec ts = {
				.tv_sec = due / 1000000000ull,
				.tv_nsec = due % 1000000000ull,
			};

			pthread_cond_timedwait(&u->cond, &u->lock, &ts);
			continue;
		}
		u->kicked = false;
		run_frames(u, now);
	}
	pthread_mutex_unlock(&u->lock);
	return NULL;
}

/* Called with the lock held: the thread looks again now. */
static void kick(struct uhci *u)
{
	u->interval = 1;
	u->kicked = true;
	pthread_cond_signal(&u->cond);
}

/* ---- registers ---------------------------------------------------------*/

static void controller_reset(struct uhci *u)
{
	u->cmd = 0;
	u->sts = STS_HALTED;
	u->intr = 0;
	u->frbase = 0;
	u->sofmod = 64;
	u->ioc_pending = u->short_pending = false;
	u->base_frame = u->next_frame = 0;
	u->interval = 1;
	for (unsigned i = 0; i < UHCI_PORTS; i++)
		port_reset(&u->ports[i]);
	update_irq(u);
}

static uint16_t read_register(struct uhci *u, unsigned reg)
{
	switch (reg) {
	case REG_USBCMD:
		return u->cmd;
	case REG_USBSTS:
		return u->sts;
	case REG_USBINTR:
		return u->intr;
	case REG_FRNUM:
		return current_frame(u, uhci_clock(u)) & 0x7ff;
	case REG_FRBASEADD:
		return u->frbase & 0xffff;
	case REG_FRBASEADD + 2:
		return u->frbase >> 16;
	case REG_SOFMOD:
		return u->sofmod;
	case REG_PORTSC:
	case REG_PORTSC + 2:
		return u->ports[(reg - REG_PORTSC) / 2].sc;
	}
	return 0;
}

static void write_usbcmd(struct uhci *u, uint16_t val)
{
	uint64_t now = uhci_clock(u), frame;
	bool was_running = uhci_running(u);

	if (val & (CMD_HCRESET | CMD_GRESET)) {
		/* both reset the controller and the devices; the global
		 * reset bit stays as written until software clears it */
		controller_reset(u);
		u->cmd = val & CMD_GRESET;
		return;
	}
	/* the frames until now ran under the old command */
	if (was_running)
		run_frames(u, now);
	frame = current_frame(u, now);
	if ((val & CMD_RS) && !(u->cmd & CMD_RS))
		u->sts &= ~STS_HALTED;
	else if (!(val & CMD_RS) && (u->cmd & CMD_RS))
		u->sts |= STS_HALTED;
	u->cmd = val & CMD_MASK;
	if (was_running && !uhci_running(u)) {
		u->base_frame = frame < u->next_frame ? u->next_frame : frame;
	} else if (!was_running && uhci_running(u)) {
		u->base_ns = now;
		u->next_frame = u->base_frame;
		kick(u);
	}
}

static void write_portsc(struct uhci *u, struct uhci_port *p, uint16_t val,
			 uint16_t mask)
{
	uint16_t sc = p->sc;
	uint16_t wanted = (val & mask) | (sc & ~mask);

	if ((wanted & PORT_PR) && !(sc & PORT_PR) && p->dev) {
		/* reset signalling: the device forgets its address and
		 * configuration; the port is disabled until software
		 * enables it */
		p->dev->ops->reset(p->dev);
		sc &= ~(PORT_PE | PORT_SUSP | PORT_RD);
	}
	sc = (sc & ~PORT_WRITABLE) | (wanted & PORT_WRITABLE);
	if (!(sc & PORT_CCS))
		sc &= ~PORT_PE;
	sc &= ~(val & mask & PORT_WRITE_CLEAR);
	p->sc = sc;
	(void)u;
}

/* A write of val to the 16-bit register at reg; only the bits in mask were
 * written (a byte access touches half of one). */
static void write_register(struct uhci *u, unsigned reg, uint16_t val,
			   uint16_t mask)
{
	uint16_t merged = (val & mask) | (read_register(u, reg) & ~mask);

	switch (reg) {
	case REG_USBCMD:
		write_usbcmd(u, merged);
		break;
	case REG_USBSTS:
		u->sts &= ~(val & mask & STS_WRITE_CLEAR);
		if (val & mask & STS_USBINT)
			u->ioc_pending = u->short_pending = false;
		break;
	case REG_USBINTR:
		u->intr = merged & 0xf;
		break;
	case REG_FRNUM:
		/* only while halted (section 2.1.5) */
		if (!uhci_running(u))
			u->base_frame = u->next_frame = merged & 0x7ff;
		break;
	case REG_FRBASEADD:
		u->frbase = (u->frbase & 0xffff0000u) | (merged & 0xf000);
		break;
	case REG_FRBASEADD + 2:
		u->frbase = (u->frbase & 0xffff) | (uint32_t)merged << 16;
		break;
	case REG_SOFMOD:
		u->sofmod = merged & 0x7f;
		break;
	case REG_PORTSC:
	case REG_PORTSC + 2:
		write_portsc(u, &u->ports[(reg - REG_PORTSC) / 2], val, mask);
		break;
	}
	update_irq(u);
}

static void uhci_io(void *opaque, uint64_t addr, void *data, unsigned size,
		    bool is_write)
{
	struct uhci *u = opaque;
	uint8_t *bytes = data;

	if (size > 4 || addr + size > UHCI_IO_SIZE) {
		if (!is_write)
			memset(data, 0, size);
		return;
	}
	pthread_mutex_lock(&u->lock);
	if (!is_write) {
		/* the frame number the guest sees has been walked */
		if (addr < REG_FRNUM + 2 && addr + size > REG_FRNUM)
			run_frames(u, uhci_clock(u));
		for (unsigned i = 0; i < size; i++) {
			unsigned at = addr + i;

			bytes[i] = read_register(u, at & ~1u) >> (8 * (at & 1));
		}
	} else {
		for (unsigned reg = addr & ~1u; reg < addr + size; reg += 2) {
			uint16_t val = 0, mask = 0;

			for (unsigned b = 0; b < 2; b++) {
				unsigned at = reg + b;

				if (at < addr || at >= addr + size)
					continue;
				val |= (uint16_t)bytes[at - addr] << (8 * b);
				mask |= 0xff << (8 * b);
			}
			write_register(u, reg, val, mask);
		}
	}
	pthread_mutex_unlock(&u->lock);
}

/* ---- remote wakeup ------------------------------------------------------*/

static void port_wakeup(void *opaque, struct usb_device *dev)
{
	struct uhci_port *p = opaque;
	struct uhci *u = p->uhci;

	pthread_mutex_lock(&u->lock);
	if (dev->remote_wakeup && (p->sc & PORT_CCS) &&
	    ((p->sc & PORT_SUSP) || (u->cmd & CMD_EGSM)) &&
	    !(p->sc & PORT_RD)) {
		/* resume signalling from the device (section 2.1.7); during
		 * global suspend the controller also reports it */
		p->sc |= PORT_RD;
		if (u->cmd & CMD_EGSM) {
			u->cmd |= CMD_FGR;
			u->sts |= STS_RESUME;
			update_irq(u);
		}
	}
	if (uhci_running(u))
		kick(u);
	pthread_mutex_unlock(&u->lock);
}

/* ---- lifecycle ----------------------------------------------------------*/

static void uhci_platform_reset(void *opaque)
{
	struct uhci *u = opaque;

	pthread_mutex_lock(&u->lock);
	u->irq_level = false; /* the PCI core forgot the line's level */
	controller_reset(u);
	pthread_mutex_unlock(&u->lock);
}

static struct uhci *uhci_new(struct vmm *vm, unsigned slot, unsigned function,
			     bool manual, char *err, size_t errlen)
{
	struct uhci *u = calloc(1, sizeof(*u));
	struct pci_device *d;
	pthread_condattr_t attr;

	if (!u) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	u->vm = vm;
	u->manual = manual;
	pthread_mutex_init(&u->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&u->cond, &attr);
	pthread_condattr_destroy(&attr);
	for (unsigned i = 0; i < UHCI_PORTS; i++)
		u->ports[i].uhci = u;

	d = &u->pci;
	d->config[0x00] = UHCI_VENDOR & 0xff;
	d->config[0x01] = UHCI_VENDOR >> 8;
	d->config[0x02] = UHCI_DEVICE & 0xff;
	d->config[0x03] = UHCI_DEVICE >> 8;
	d->config[0x08] = 0x01; /* revision */
	d->config[0x09] = UHCI_CLASS & 0xff;
	d->config[0x0a] = (UHCI_CLASS >> 8) & 0xff;
	d->config[0x0b] = UHCI_CLASS >> 16;
	d->config[PCI_INTERRUPT_PIN] = 4;      /* INTD, as the PIIX3's */
	d->config[UHCI_PCI_SBRN] = 0x10;       /* USB 1.0 */
	d->config[UHCI_PCI_LEGSUP + 1] = 0x20; /* PIRQ enabled */
	d->bar_size[UHCI_IO_BAR] = UHCI_IO_SIZE;
	d->bar_is_io[UHCI_IO_BAR] = true;
	d->bar_io[UHCI_IO_BAR] = uhci_io;
	d->opaque = u;
	controller_reset(u);
	if (pci_register_function(vm, d, slot, function)) {
		snprintf(err, errlen, "PCI %02x.%x is taken", slot, function);
		goto fail;
	}
	vmm_on_reset(vm, uhci_platform_reset, u);
	if (!manual) {
		if (pthread_create(&u->thread, NULL, frame_thread, u)) {
			snprintf(err, errlen,
				 "cannot start the USB frame thread");
			goto fail;
		}
		u->thread_started = true;
	}
	return u;
fail:
	uhci_destroy(u);
	return NULL;
}

struct uhci *uhci_create(struct vmm *vm, unsigned slot, unsigned function,
			 char *err, size_t errlen)
{
	return uhci_new(vm, slot, function, false, err, errlen);
}

struct uhci *uhci_create_manual(struct vmm *vm, unsigned slot,
				unsigned function, char *err, size_t errlen)
{
	return uhci_new(vm, slot, function, true, err, errlen);
}

int uhci_attach(struct uhci *u, unsigned port, struct usb_device *dev)
{
	struct uhci_port *p;

	if (port >= UHCI_PORTS)
		return -EINVAL;
	p = &u->ports[port];
	pthread_mutex_lock(&u->lock);
	if (p->dev) {
		pthread_mutex_unlock(&u->lock);
		return -EBUSY;
	}
	p->dev = dev;
	dev->port = p;
	dev->wakeup = port_wakeup;
	port_reset(p);
	pthread_mutex_unlock(&u->lock);
	return 0;
}

void uhci_advance(struct uhci *u, unsigned ms)
{
	pthread_mutex_lock(&u->lock);
	u->manual_ns += ms * FRAME_NS;
	run_frames(u, uhci_clock(u));
	pthread_mutex_unlock(&u->lock);
}

uint64_t uhci_frames_walked(struct uhci *u)
{
	uint64_t n;

	pthread_mutex_lock(&u->lock);
	n = u->frames_walked;
	pthread_mutex_unlock(&u->lock);
	return n;
}

void uhci_destroy(struct uhci *u)
{
	if (!u)
		return;
	if (u->thread_started) {
		pthread_mutex_lock(&u->lock);
		u->stopping = true;
		pthread_cond_signal(&u->cond);
		pthread_mutex_unlock(&u->lock);
		pthread_join(u->thread, NULL);
	}
	for (unsigned i = 0; i < UHCI_PORTS; i++)
		if (u->ports[i].dev)
			u->ports[i].dev->wakeup = NULL;
	pthread_cond_destroy(&u->cond);
	pthread_mutex_destroy(&u->lock);
	free(u);
}
