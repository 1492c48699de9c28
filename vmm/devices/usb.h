/* SPDX-License-Identifier: MIT */
/*
 * USB devices behind imgvm's host controller (vmm/devices/uhci.c): the
 * controller turns each transfer descriptor into one packet (USB 1.1
 * chapter 8: a token, its data, the handshake) and hands it to the device
 * at the addressed port; the device answers ACK (with data for IN), NAK or
 * STALL.  Devices run under the controller's lock; one that has something
 * new to send while the host is not asking (a pointer moved) calls
 * usb_device_wakeup.
 */
#ifndef IMGVM_USB_H
#define IMGVM_USB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* packet identifiers (USB 1.1 table 8-1) */
#define USB_PID_OUT 0xe1
#define USB_PID_IN 0x69
#define USB_PID_SETUP 0x2d

/* the largest packet of a full-speed device (USB 1.1 5.8.3) */
#define USB_MAX_PACKET 1023

/* standard requests (USB 1.1 table 9-4) */
#define USB_REQ_GET_STATUS 0x00
#define USB_REQ_CLEAR_FEATURE 0x01
#define USB_REQ_SET_FEATURE 0x03
#define USB_REQ_SET_ADDRESS 0x05
#define USB_REQ_GET_DESCRIPTOR 0x06
#define USB_REQ_GET_CONFIGURATION 0x08
#define USB_REQ_SET_CONFIGURATION 0x09
#define USB_REQ_GET_INTERFACE 0x0a
#define USB_REQ_SET_INTERFACE 0x0b

#define USB_DESC_DEVICE 0x01
#define USB_DESC_CONFIGURATION 0x02
#define USB_DESC_STRING 0x03
#define USB_DESC_INTERFACE 0x04
#define USB_DESC_ENDPOINT 0x05

#define USB_FEATURE_ENDPOINT_HALT 0
#define USB_FEATURE_DEVICE_REMOTE_WAKEUP 1

enum usb_handshake {
	USB_ACK = 0,
	USB_NAK,   /* nothing to send now: the host asks again later */
	USB_STALL, /* request not supported, or endpoint halted */
	USB_BABBLE /* the device sent more than the host allowed */
};

struct usb_packet {
	uint8_t pid;	  /* USB_PID_SETUP, _IN or _OUT */
	uint8_t endpoint; /* 0-15 */
	uint8_t *data;	  /* SETUP/OUT: the bytes sent; IN: room */
	size_t len;	  /* SETUP/OUT: bytes in data; IN: room in data */
	size_t actual;	  /* IN: bytes the device put in data */
};

struct usb_device;

struct usb_device_ops {
	enum usb_handshake (*handle_packet)(struct usb_device *dev,
					    struct usb_packet *p);
	/* A bus reset on its port: address 0, not configured. */
	void (*reset)(struct usb_device *dev);
};

struct usb_device {
	const struct usb_device_ops *ops;
	/* the address the host gave it (SET_ADDRESS); 0 after a reset */
	uint8_t address;
	/* the host allowed it to wake a suspended bus (SET_FEATURE
	 * DEVICE_REMOTE_WAKEUP) */
	bool remote_wakeup;
	/* filled by the controller the device is attached to */
	void (*wakeup)(void *port, struct usb_device *dev);
	void *port;
};

/* The device has data the host has not asked for: the controller polls
 * soon, or resumes the bus when it is suspended and the device may wake
 * it.  Called without the device's own lock held. */
static inline void usb_device_wakeup(struct usb_device *dev)
{
	if (dev->wakeup)
		dev->wakeup(dev->port, dev);
}

/* ---- the UHCI controller (uhci.c) --------------------------------------*/

struct vmm;
struct uhci;

#define UHCI_PORTS 2

/* A PIIX3 USB function (8086:7020) at slot.function on bus 0.  Returns
 * NULL with a message in err. */
struct uhci *uhci_create(struct vmm *vm, unsigned slot, unsigned function,
			 char *err, size_t errlen);
/* Plug dev into root hub port (0 or 1); the guest sees a connect. */
int uhci_attach(struct uhci *u, unsigned port, struct usb_device *dev);
/* Stops the frame timer; attached devices are not freed. */
void uhci_destroy(struct uhci *u);

/* For tests: run the frames due by now at once (the frame timer's work),
 * as if ms milliseconds had passed since the last call.  The controller
 * made with uhci_create_manual has no timer thread and runs only then. */
struct uhci *uhci_create_manual(struct vmm *vm, unsigned slot,
				unsigned function, char *err, size_t errlen);
void uhci_advance(struct uhci *u, unsigned ms);
/* Frames the controller walked since it was made (tests, idle cost). */
uint64_t uhci_frames_walked(struct uhci *u);

/* ---- the HID tablet (usb_tablet.c) -------------------------------------*/

struct usb_tablet;

struct usb_tablet *usb_tablet_create(void);
void usb_tablet_destroy(struct usb_tablet *t);
struct usb_device *usb_tablet_device(struct usb_tablet *t);

#endif
