// SPDX-License-Identifier: MIT
/*
 * The 8042 keyboard controller at 0x60 (data) and 0x64 (status/command):
 * enough for SeaBIOS's and Linux's probing (self tests, command byte,
 * keyboard and mouse reset/identify answered with ACKs) and the reset
 * line (command 0xFE, or output port bit 0 cleared with 0xD1).  No key
 * ever arrives: the console is the serial port.
 */
#include <stdlib.h>
#include <string.h>

#include "vmm/machine.h"

#define I8042_DATA 0x60
#define I8042_STATUS 0x64

#define STATUS_OBF 0x01
#define STATUS_SYS 0x04
#define STATUS_CMD 0x08
#define STATUS_AUX_OBF 0x20

#define CMD_BYTE_KBD_INT 0x01
#define CMD_BYTE_AUX_INT 0x02
#define CMD_BYTE_SYS 0x04

#define KBD_IRQ 1
#define AUX_IRQ 12

#define I8042_QUEUE 16

struct i8042 {
	struct vmm *vm;
	pthread_mutex_t lock;
	uint8_t command_byte;
	uint8_t status;
	uint8_t pending_command; /* controller command awaiting data */
	uint8_t kbd_pending;	 /* keyboard command awaiting a parameter */
	uint8_t aux_pending;
	uint8_t output_port;
	/* output queue: byte and whether it came from the aux port */
	uint8_t queue[I8042_QUEUE];
	bool queue_aux[I8042_QUEUE];
	unsigned head, count;
	bool kbd_irq, aux_irq;
};

static void i8042_update(struct i8042 *k)
{
	bool kbd = false, aux = false;

	k->status &= ~(STATUS_OBF | STATUS_AUX_OBF);
	if (k->count) {
		k->status |= STATUS_OBF;
		if (k->queue_aux[k->head]) {
			k->status |= STATUS_AUX_OBF;
			aux = k->command_byte & CMD_BYTE_AUX_INT;
		} else {
			kbd = k->command_byte & CMD_BYTE_KBD_INT;
		}
	}
	if (kbd != k->kbd_irq) {
		k->kbd_irq = kbd;
		vmm_set_irq(k->vm, KBD_IRQ, kbd);
	}
	if (aux != k->aux_irq) {
		k->aux_irq = aux;
		vmm_set_irq(k->vm, AUX_IRQ, aux);
	}
}

static void i8042_queue(struct i8042 *k, uint8_t byte, bool aux)
{
	unsigned at;

	if (k->count == I8042_QUEUE)
		return;
	at = (k->head + k->count++) % I8042_QUEUE;
	k->queue[at] = byte;
	k->queue_aux[at] = aux;
}

static void i8042_keyboard_command(struct i8042 *k, uint8_t byte)
{
	if (k->kbd_pending) {
		/* parameter of LED (0xED), typematic (0xF3), scan set (0xF0) */
		k->kbd_pending = 0;
		i8042_queue(k, 0xfa, false);
		return;
	}
	switch (byte) {
	case 0xed:
	case 0xf3:
	case 0xf0:
		k->kbd_pending = byte;
		i8042_queue(k, 0xfa, false);
		break;
	case 0xf2: /* identify: MF2 keyboard */
		i8042_queue(k, 0xfa, false);
		i8042_queue(k, 0xab, false);
		i8042_queue(k, 0x83, false);
		break;
	case 0xee: /* echo */
		i8042_queue(k, 0xee, false);
		break;
	case 0xff: /* reset: ACK, self test passed */
		i8042_queue(k, 0xfa, false);
		i8042_queue(k, 0xaa, false);
		break;
	default:
		i8042_queue(k, 0xfa, false);
		break;
	}
}

static void i8042_aux_command(struct i8042 *k, uint8_t byte)
{
	if (k->aux_pending) {
		/* parameter of sample rate (0xF3) or resolution (0xE8) */
		k->aux_pending = 0;
		i8042_queue(k, 0xfa, true);
		return;
	}
	switch (byte) {
	case 0xf3:
	case 0xe8:
		k->aux_pending = byte;
		i8042_queue(k, 0xfa, true);
		break;
	case 0xf2: /* identify: standard mouse */
		i8042_queue(k, 0xfa, true);
		i8042_queue(k, 0x00, true);
		break;
	case 0xe9: /* status request */
		i8042_queue(k, 0xfa, true);
		i8042_queue(k, 0x00, true);
		i8042_queue(k, 0x02, true);
		i8042_queue(k, 0x64, true);
		break;
	case 0xff:
		i8042_queue(k, 0xfa, true);
		i8042_queue(k, 0xaa, true);
		i8042_queue(k, 0x00, true);
		break;
	default:
		i8042_queue(k, 0xfa, true);
		break;
	}
}

static void i8042_data_write(struct i8042 *k, uint8_t byte)
{
	uint8_t command = k->pending_command;

	k->pending_command = 0;
	k->status &= ~STATUS_CMD;
	switch (command) {
	case 0x60: /* write command byte */
		k->command_byte = byte;
		if (byte & CMD_BYTE_SYS)
			k->status |= STATUS_SYS;
		break;
	case 0xd1: /* write output port: bit 0 low pulls the reset line */
		k->output_port = byte;
		if (!(byte & 0x01))
			vmm_request_reset(k->vm);
		break;
	case 0xd2: /* write keyboard output buffer */
		i8042_queue(k, byte, false);
		break;
	case 0xd3: /* write aux output buffer */
		i8042_queue(k, byte, true);
		break;
	case 0xd4: /* write to the aux device */
		i8042_aux_command(k, byte);
		break;
	default:
		i8042_keyboard_command(k, byte);
		break;
	}
}

static void i8042_command(struct i8042 *k, uint8_t command)
{
	k->status |= STATUS_CMD;
	switch (command) {
	case 0x20: /* read command byte */
		i8042_queue(k, k->command_byte, false);
		break;
	case 0x60:
	case 0xd1:
	case 0xd2:
	case 0xd3:
	case 0xd4:
		k->pending_command = command;
		break;
	case 0xa7: /* disable aux */
		k->command_byte |= 0x20;
		break;
	case 0xa8: /* enable aux */
		k->command_byte &= ~0x20;
		break;
	case 0xa9: /* aux interface test: OK */
	case 0xab: /* keyboard interface test: OK */
		i8042_queue(k, 0x00, false);
		break;
	case 0xaa: /* controller self test */
		k->status |= STATUS_SYS;
		i8042_queue(k, 0x55, false);
		break;
	case 0xad: /* disable keyboard */
		k->command_byte |= 0x10;
		break;
	case 0xae: /* enable keyboard */
		k->command_byte &= ~0x10;
		break;
	case 0xc0: /* read input port */
		i8042_queue(k, 0x80, false);
		break;
	case 0xd0: /* read output port */
		i8042_queue(k, k->output_port, false);
		break;
	default:
		/* 0xF0-0xFF pulse output lines; bit 0 clear = reset */
		if (command >= 0xf0 && !(command & 0x01))
			vmm_request_reset(k->vm);
		break;
	}
}

static void i8042_io(void *opaque, uint64_t addr, void *data, unsigned size,
		     bool is_write)
{
	struct i8042 *k = opaque;
	uint8_t *byte = data;

	if (size != 1) {
		if (!is_write)
			memset(data, 0xff, size);
		return;
	}
	pthread_mutex_lock(&k->lock);
	if (addr == I8042_DATA - I8042_DATA) {
		if (is_write) {
			i8042_data_write(k, *byte);
		} else if (k->count) {
			*byte = k->queue[k->head];
			k->head = (k->head + 1) % I8042_QUEUE;
			k->count--;
		} else {
			*byte = 0;
		}
	} else if (is_write) {
		i8042_command(k, *byte);
	} else {
		*byte = k->status;
	}
	i8042_update(k);
	pthread_mutex_unlock(&k->lock);
}

static void i8042_reset(void *opaque)
{
	struct i8042 *k = opaque;

	pthread_mutex_lock(&k->lock);
	k->command_byte = CMD_BYTE_KBD_INT | CMD_BYTE_SYS;
	k->status = 0;
	k->pending_command = 0;
	k->kbd_pending = 0;
	k->aux_pending = 0;
	k->output_port = 0x03; /* reset line high, A20 on */
	k->head = 0;
	k->count = 0;
	k->kbd_irq = false;
	k->aux_irq = false;
	pthread_mutex_unlock(&k->lock);
}

/* Two single-port ranges: 0x61-0x63 belong to the PIT's speaker port. */
static void i8042_status_io(void *opaque, uint64_t addr, void *data,
			    unsigned size, bool is_write)
{
	i8042_io(opaque, addr + (I8042_STATUS - I8042_DATA), data, size,
		 is_write);
}

struct i8042 *i8042_create(struct vmm *vm)
{
	struct i8042 *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	k->vm = vm;
	pthread_mutex_init(&k->lock, NULL);
	i8042_reset(k);
	if (vmm_register_pio(vm, I8042_DATA, 1, i8042_io, k) ||
	    vmm_register_pio(vm, I8042_STATUS, 1, i8042_status_io, k)) {
		i8042_destroy(k);
		return NULL;
	}
	vmm_on_reset(vm, i8042_reset, k);
	return k;
}

void i8042_destroy(struct i8042 *k)
{
	if (!k)
		return;
	pthread_mutex_destroy(&k->lock);
	free(k);
}
