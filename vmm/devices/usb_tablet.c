// SPDX-License-Identifier: MIT
/*
 * A USB HID tablet: an absolute pointer, so that the guest's cursor lands
 * where the viewer's is (a relative PS/2 mouse drifts as soon as the guest
 * accelerates it).  One interface (class HID, no boot protocol: firmware
 * leaves it alone), one interrupt IN endpoint polled every 10 ms, and a
 * 6-byte report: buttons, X and Y in 0..0x7fff, wheel.
 *
 * Descriptors and requests: USB 1.1 chapter 9, HID 1.11 sections 6 and 7.
 * The control pipe's stage (setup, data, status) is kept here; the
 * controller only moves packets.  Pointer events arrive from the display's
 * thread: they are queued (a press and its release between two polls must
 * both reach the guest) under the tablet's own lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmm/devices/usb.h"
#include "vmm/input.h"

/* the IDs and serial of QEMU's tablet, so that what guests set up for
 * that one (systemd's hwdb lets it autosuspend) applies here too */
#define TABLET_VENDOR 0x0627
#define TABLET_PRODUCT 0x0001
#define TABLET_RELEASE 0x0100
#define EP0_MAX_PACKET 8
#define REPORT_BYTES 6
#define INTERRUPT_INTERVAL_MS 10
#define QUEUE_LEN 16
#define CONTROL_BUF 256

/* HID class requests (HID 1.11 section 7.2) and descriptor types */
#define HID_GET_REPORT 0x01
#define HID_GET_IDLE 0x02
#define HID_GET_PROTOCOL 0x03
#define HID_SET_REPORT 0x09
#define HID_SET_IDLE 0x0a
#define HID_SET_PROTOCOL 0x0b
#define HID_DESC_HID 0x21
#define HID_DESC_REPORT 0x22

/* bmRequestType: direction, type, recipient (USB 1.1 table 9-2) */
#define REQ_IN 0x80
#define REQ_CLASS 0x20
#define REQ_TYPE_MASK 0x60
#define REQ_RECIPIENT_MASK 0x1f
#define REQ_DEVICE 0
#define REQ_INTERFACE 1
#define REQ_ENDPOINT 2

/* HID 1.11 section 6.2.2 items: a mouse-style pointer collection with
 * three buttons, absolute X and Y of 16 bits (0..32767) and a relative
 * wheel. */
static const uint8_t report_descriptor[] = {
	0x05, 0x01,	  /* Usage Page (Generic Desktop) */
	0x09, 0x02,	  /* Usage (Mouse) */
	0xa1, 0x01,	  /* Collection (Application) */
	0x09, 0x01,	  /*  Usage (Pointer) */
	0xa1, 0x00,	  /*  Collection (Physical) */
	0x05, 0x09,	  /*   Usage Page (Button) */
	0x19, 0x01,	  /*   Usage Minimum (1) */
	0x29, 0x03,	  /*   Usage Maximum (3) */
	0x15, 0x00,	  /*   Logical Minimum (0) */
	0x25, 0x01,	  /*   Logical Maximum (1) */
	0x95, 0x03,	  /*   Report Count (3) */
	0x75, 0x01,	  /*   Report Size (1) */
	0x81, 0x02,	  /*   Input (Data, Variable, Absolute) */
	0x95, 0x01,	  /*   Report Count (1) */
	0x75, 0x05,	  /*   Report Size (5) */
	0x81, 0x03,	  /*   Input (Constant): padding */
	0x05, 0x01,	  /*   Usage Page (Generic Desktop) */
	0x09, 0x30,	  /*   Usage (X) */
	0x09, 0x31,	  /*   Usage (Y) */
	0x15, 0x00,	  /*   Logical Minimum (0) */
	0x26, 0xff, 0x7f, /*   Logical Maximum (32767) */
	0x35, 0x00,	  /*   Physical Minimum (0) */
	0x46, 0xff, 0x7f, /*   Physical Maximum (32767) */
	0x75, 0x10,	  /*   Report Size (16) */
	0x95, 0x02,	  /*   Report Count (2) */
	0x81, 0x02,	  /*   Input (Data, Variable, Absolute) */
	0x09, 0x38,	  /*   Usage (Wheel) */
	0x15, 0x81,	  /*   Logical Minimum (-127) */
	0x25, 0x7f,	  /*   Logical Maximum (127) */
	0x35, 0x00,	  /*   Physical Minimum (0) */
	0x45, 0x00,	  /*   Physical Maximum (0): none */
	0x75, 0x08,	  /*   Report Size (8) */
	0x95, 0x01,	  /*   Report Count (1) */
	0x81, 0x06,	  /*   Input (Data, Variable, Relative) */
	0xc0,		  /*  End Collection */
	0xc0,		  /* End Collection */
};

static const uint8_t device_descriptor[18] = {
	18,
	USB_DESC_DEVICE,
	0x10,
	0x01, /* USB 1.1 */
	0,
	0,
	0, /* class in the interface */
	EP0_MAX_PACKET,
	TABLET_VENDOR & 0xff,
	TABLET_VENDOR >> 8,
	TABLET_PRODUCT & 0xff,
	TABLET_PRODUCT >> 8,
	TABLET_RELEASE & 0xff,
	TABLET_RELEASE >> 8,
	1,
	2,
	3, /* manufacturer, product, serial strings */
	1, /* configurations */
};

#define CONFIG_TOTAL (9 + 9 + 9 + 7)

static const uint8_t configuration_descriptor[CONFIG_TOTAL] = {
	/* configuration (USB 1.1 table 9-8) */
	9, USB_DESC_CONFIGURATION, CONFIG_TOTAL, 0, 1, /* interfaces */
	1,					       /* bConfigurationValue */
	0,					       /* no string */
	0xa0, /* bus powered, remote wakeup */
	50,   /* 100 mA */
	/* interface (table 9-9): HID, no subclass (not a boot device) */
	9, USB_DESC_INTERFACE, 0, 0, 1, 0x03, 0x00, 0x00, 0,
	/* HID descriptor (HID 1.11 section 6.2.1) */
	9, HID_DESC_HID, 0x11, 0x01, /* HID 1.11 */
	0,			     /* no country */
	1, HID_DESC_REPORT, sizeof(report_descriptor), 0,
	/* endpoint 1 IN, interrupt (table 9-10) */
	7, USB_DESC_ENDPOINT, 0x81, 0x03, 8, 0, INTERRUPT_INTERVAL_MS
};

_Static_assert(sizeof(report_descriptor) < 256, "wDescriptorLength");

static const char *const strings[] = { NULL, "imgvm", "USB Tablet", "42" };

enum control_stage {
	CONTROL_IDLE,
	CONTROL_DATA_IN,   /* the host reads data, then sends status OUT */
	CONTROL_DATA_OUT,  /* the host sends data, then reads status IN */
	CONTROL_STATUS_IN, /* no data stage: the host reads status IN */
	CONTROL_STALLED,   /* until the next SETUP */
};

struct tablet_report {
	uint8_t buttons;
	uint16_t x, y;
	int8_t wheel;
};

struct usb_tablet {
	struct usb_device dev;

	/* under the controller's lock (packets come from it) */
	enum control_stage stage;
	uint8_t request[8];
	uint8_t buf[CONTROL_BUF];
	size_t buf_len, buf_pos;
	uint8_t pending_address;
	bool address_pending;
	uint8_t configuration;
	uint8_t idle_rate; /* 4 ms units; 0: report on change only */
	uint8_t protocol;  /* 1 report, 0 boot */
	bool halted;	   /* endpoint 1 (CLEAR_FEATURE ENDPOINT_HALT) */
	struct timespec last_report;

	/* the pointer, from the display thread */
	pthread_mutex_t lock;
	struct tablet_report state;
	struct tablet_report queue[QUEUE_LEN];
	unsigned queue_head, queue_count;
};

static void put_report(uint8_t *out, const struct tablet_report *r)
{
	out[0] = r->buttons;
	out[1] = r->x;
	out[2] = r->x >> 8;
	out[3] = r->y;
	out[4] = r->y >> 8;
	out[5] = (uint8_t)r->wheel;
}

/* String descriptor index: UTF-16LE of an ASCII string, or the language
 * list (US English) for index 0. */
static size_t string_descriptor(unsigned index, uint8_t *out)
{
	const char *s;
	size_t n = 2;

	if (index == 0) {
		out[0] = 4;
		out[1] = USB_DESC_STRING;
		out[2] = 0x09;
		out[3] = 0x04;
		return 4;
	}
	if (index >= sizeof(strings) / sizeof(strings[0]))
		return 0;
	for (s = strings[index]; *s && n + 2 <= 254; s++) {
		out[n++] = (uint8_t)*s;
		out[n++] = 0;
	}
	out[0] = n;
	out[1] = USB_DESC_STRING;
	return n;
}

static void take_report(struct usb_tablet *t, struct tablet_report *r,
			bool *changed)
{
	pthread_mutex_lock(&t->lock);
	*changed = t->queue_count > 0;
	if (t->queue_count) {
		*r = t->queue[t->queue_head];
		t->queue_head = (t->queue_head + 1) % QUEUE_LEN;
		t->queue_count--;
	} else {
		*r = t->state;
		r->wheel = 0;
	}
	pthread_mutex_unlock(&t->lock);
}

/* A standard or class request with its answer in t->buf; returns the
 * answer's length or -1 to stall.  SET_ADDRESS waits for the status
 * stage. */
static int tablet_request(struct usb_tablet *t)
{
	const uint8_t *r = t->request;
	unsigned type = r[0], request = r[1];
	unsigned value = r[2] | r[3] << 8, index = r[4] | r[5] << 8;
	unsigned recipient = type & REQ_RECIPIENT_MASK;
	bool in = type & REQ_IN;
	uint8_t *out = t->buf;

	if ((type & REQ_TYPE_MASK) == REQ_CLASS) {
		if (recipient != REQ_INTERFACE || index != 0)
			return -1;
		switch (request) {
		case HID_GET_REPORT: {
			struct tablet_report rep;

			if (!in)
				return -1;
			pthread_mutex_lock(&t->lock);
			rep = t->state;
			pthread_mutex_unlock(&t->lock);
			rep.wheel = 0;
			put_report(out, &rep);
			return REPORT_BYTES;
		}
		case HID_GET_IDLE:
			out[0] = t->idle_rate;
			return in ? 1 : -1;
		case HID_GET_PROTOCOL:
			out[0] = t->protocol;
			return in ? 1 : -1;
		case HID_SET_IDLE:
			t->idle_rate = value >> 8;
			return in ? -1 : 0;
		case HID_SET_PROTOCOL:
			t->protocol = value & 1;
			return in ? -1 : 0;
		case HID_SET_REPORT:
			/* no output reports: accepted and ignored */
			return in ? -1 : 0;
		}
		return -1;
	}
	if ((type & REQ_TYPE_MASK) != 0)
		return -1;
	switch (request) {
	case USB_REQ_GET_STATUS:
		if (!in)
			return -1;
		out[0] = out[1] = 0;
		if (recipient == REQ_DEVICE)
			out[0] = t->dev.remote_wakeup ? 2 : 0;
		else if (recipient == REQ_ENDPOINT && (index & 0x7f) == 1)
			out[0] = t->halted;
		return 2;
	case USB_REQ_CLEAR_FEATURE:
	case USB_REQ_SET_FEATURE: {
		bool set = request == USB_REQ_SET_FEATURE;

		if (in)
			return -1;
		if (recipient == REQ_DEVICE &&
		    value == USB_FEATURE_DEVICE_REMOTE_WAKEUP) {
			t->dev.remote_wakeup = set;
			return 0;
		}
		if (recipient == REQ_ENDPOINT &&
		    value == USB_FEATURE_ENDPOINT_HALT) {
			if ((index & 0x7f) == 1)
				t->halted = set;
			return 0;
		}
		return -1;
	}
	case USB_REQ_SET_ADDRESS:
		if (in || recipient != REQ_DEVICE || value > 127)
			return -1;
		t->pending_address = value;
		t->address_pending = true;
		return 0;
	case USB_REQ_GET_DESCRIPTOR:
		if (!in)
			return -1;
		switch (value >> 8) {
		case USB_DESC_DEVICE:
			memcpy(out, device_descriptor,
			       sizeof(device_descriptor));
			return sizeof(device_descriptor);
		case USB_DESC_CONFIGURATION:
			if ((value & 0xff) != 0)
				return -1;
			memcpy(out, configuration_descriptor,
			       sizeof(configuration_descriptor));
			return sizeof(configuration_descriptor);
		case USB_DESC_STRING: {
			size_t n = string_descriptor(value & 0xff, out);

			return n ? (int)n : -1;
		}
		case HID_DESC_HID:
			memcpy(out, configuration_descriptor + 18, 9);
			return recipient == REQ_INTERFACE ? 9 : -1;
		case HID_DESC_REPORT:
			memcpy(out, report_descriptor,
			       sizeof(report_descriptor));
			return recipient == REQ_INTERFACE
				       ? (int)sizeof(report_descriptor)
				       : -1;
		}
		return -1;
	case USB_REQ_GET_CONFIGURATION:
		out[0] = t->configuration;
		return in ? 1 : -1;
	case USB_REQ_SET_CONFIGURATION:
		if (in || (value & 0xff) > 1)
			return -1;
		t->configuration = value & 0xff;
		t->halted = false;
		return 0;
	case USB_REQ_GET_INTERFACE:
		out[0] = 0;
		return in && t->configuration ? 1 : -1;
	case USB_REQ_SET_INTERFACE:
		return !in && t->configuration && value == 0 && index == 0 ? 0
									   : -1;
	}
	return -1;
}

static enum usb_handshake tablet_control(struct usb_tablet *t,
					 struct usb_packet *p)
{
	switch (p->pid) {
	case USB_PID_SETUP: {
		unsigned length;
		int n;

		/* a SETUP always ends what came before */
		t->address_pending = false;
		if (p->len != 8) {
			t->stage = CONTROL_STALLED;
			return USB_STALL;
		}
		memcpy(t->request, p->data, 8);
		length = t->request[6] | t->request[7] << 8;
		t->buf_len = t->buf_pos = 0;
		if (!(t->request[0] & REQ_IN) && length) {
			/* the data comes first; requests with an OUT data
			 * stage (SET_REPORT) are answered at the status */
			if (length > CONTROL_BUF) {
				t->stage = CONTROL_STALLED;
				return USB_STALL;
			}
			t->buf_len = length;
			t->stage = CONTROL_DATA_OUT;
			return USB_ACK;
		}
		n = tablet_request(t);
		if (n < 0) {
			/* a SETUP is always taken; the data or status stage
			 * stalls */
			t->stage = CONTROL_STALLED;
			return USB_ACK;
		}
		if (t->request[0] & REQ_IN) {
			t->buf_len = (unsigned)n < length ? (unsigned)n
							  : length;
			t->stage = CONTROL_DATA_IN;
		} else {
			t->stage = CONTROL_STATUS_IN;
		}
		return USB_ACK;
	}
	case USB_PID_IN:
		if (t->stage == CONTROL_DATA_IN) {
			size_t n = t->buf_len - t->buf_pos;

			if (n > p->len)
				n = p->len;
			memcpy(p->data, t->buf + t->buf_pos, n);
			t->buf_pos += n;
			p->actual = n;
			return USB_ACK;
		}
		if (t->stage == CONTROL_STATUS_IN) {
			p->actual = 0;
			t->stage = CONTROL_IDLE;
			if (t->address_pending) {
				t->dev.address = t->pending_address;
				t->address_pending = false;
			}
			return USB_ACK;
		}
		return USB_STALL;
	case USB_PID_OUT:
		if (t->stage == CONTROL_DATA_IN) {
			/* the status stage: the host read what it wanted */
			t->stage = CONTROL_IDLE;
			return USB_ACK;
		}
		if (t->stage == CONTROL_DATA_OUT) {
			size_t n = t->buf_len - t->buf_pos;

			if (p->len > n)
				return USB_STALL;
			memcpy(t->buf + t->buf_pos, p->data, p->len);
			t->buf_pos += p->len;
			if (t->buf_pos == t->buf_len) {
				if (tablet_request(t) < 0) {
					t->stage = CONTROL_STALLED;
					return USB_STALL;
				}
				t->stage = CONTROL_STATUS_IN;
			}
			return USB_ACK;
		}
		return USB_STALL;
	}
	return USB_STALL;
}

static bool idle_period_over(struct usb_tablet *t)
{
	struct timespec now;
	long ms;

	if (!t->idle_rate)
		return false;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (now.tv_sec - t->last_report.tv_sec) * 1000 +
	     (now.tv_nsec - t->last_report.tv_nsec) / 1000000;
	return ms >= t->idle_rate * 4L;
}

static enum usb_handshake tablet_handle_packet(struct usb_device *dev,
					       struct usb_packet *p)
{
	struct usb_tablet *t = (struct usb_tablet *)dev;
	struct tablet_report r;
	bool changed;

	p->actual = 0;
	if (p->endpoint == 0)
		return tablet_control(t, p);
	if (p->endpoint != 1 || p->pid != USB_PID_IN || !t->configuration ||
	    t->halted)
		return USB_STALL;
	take_report(t, &r, &changed);
	if (!changed && !idle_period_over(t))
		return USB_NAK;
	if (p->len < REPORT_BYTES) {
		/* the host asked for less than a report: it gets what fits,
		 * and the report is marked as too long */
		put_report(t->buf, &r);
		memcpy(p->data, t->buf, p->len);
		p->actual = p->len;
		return USB_BABBLE;
	}
	put_report(p->data, &r);
	p->actual = REPORT_BYTES;
	clock_gettime(CLOCK_MONOTONIC, &t->last_report);
	return USB_ACK;
}

static void tablet_reset(struct usb_device *dev)
{
	struct usb_tablet *t = (struct usb_tablet *)dev;

	t->dev.address = 0;
	t->dev.remote_wakeup = false;
	t->stage = CONTROL_IDLE;
	t->address_pending = false;
	t->configuration = 0;
	t->idle_rate = 0;
	t->protocol = 1;
	t->halted = false;
	pthread_mutex_lock(&t->lock);
	t->queue_count = 0;
	pthread_mutex_unlock(&t->lock);
}

static const struct usb_device_ops tablet_ops = {
	.handle_packet = tablet_handle_packet,
	.reset = tablet_reset,
};

struct usb_tablet *usb_tablet_create(void)
{
	struct usb_tablet *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->dev.ops = &tablet_ops;
	pthread_mutex_init(&t->lock, NULL);
	tablet_reset(&t->dev);
	return t;
}

void usb_tablet_destroy(struct usb_tablet *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t);
}

struct usb_device *usb_tablet_device(struct usb_tablet *t)
{
	return &t->dev;
}

void usb_tablet_pointer_event(struct usb_tablet *t, unsigned x, unsigned y,
			      int wheel, unsigned buttons)
{
	/* HID buttons: 1 left, 2 right, 3 middle (as INPUT_BUTTON_*); a
	 * positive HID wheel turns away from the user, the input API's
	 * towards */
	struct tablet_report r = {
		.buttons = buttons & 7,
		.x = x > INPUT_ABSOLUTE_MAX ? INPUT_ABSOLUTE_MAX : x,
		.y = y > INPUT_ABSOLUTE_MAX ? INPUT_ABSOLUTE_MAX : y,
		.wheel = wheel > 127	? -127
			 : wheel < -127 ? 127
					: -wheel,
	};

	pthread_mutex_lock(&t->lock);
	t->state = r;
	t->state.wheel = 0;
	if (t->queue_count == QUEUE_LEN) {
		/* the guest is not reading: the newest position replaces
		 * the last queued one */
		t->queue[(t->queue_head + QUEUE_LEN - 1) % QUEUE_LEN] = r;
	} else {
		t->queue[(t->queue_head + t->queue_count) % QUEUE_LEN] = r;
		t->queue_count++;
	}
	pthread_mutex_unlock(&t->lock);
	usb_device_wakeup(&t->dev);
}
