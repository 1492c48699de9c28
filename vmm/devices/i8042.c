// SPDX-License-Identifier: MIT
/*
 * The 8042 keyboard controller at 0x60 (data) and 0x64 (status/command):
 * enough for SeaBIOS's and Linux's probing (self tests, command byte,
 * keyboard and mouse reset/identify answered with ACKs) and the reset
 * line (command 0xFE, or output port bit 0 cleared with 0xD1).
 *
 * Keys come from a front end (vmm/input.h) as set 1 make codes; the
 * keyboard sends them in the scan code set the guest chose (set 2 by
 * default) and the controller translates set 2 back to set 1 when the
 * command byte's XLAT bit is on, as a PC does.  The aux port has a PS/2
 * mouse (IntelliMouse wheel after the 200/100/80 sample-rate knock).
 * Each byte read from the queue pulses the IRQ line when more follow:
 * the PIC's ISA inputs are edge-triggered.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/input.h"
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
#define CMD_BYTE_KBD_DISABLED 0x10
#define CMD_BYTE_AUX_DISABLED 0x20
#define CMD_BYTE_XLAT 0x40

#define KBD_IRQ 1
#define AUX_IRQ 12

#define I8042_QUEUE 256

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
	/* keyboard: scan code set (1-3), scanning on */
	unsigned scan_set;
	bool scanning;
	/* mouse: reporting on, ID (0 plain, 3 wheel), last sample rates */
	bool mouse_reporting;
	uint8_t mouse_id;
	uint8_t sample_rates[3];
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
		uint8_t command = k->kbd_pending;

		k->kbd_pending = 0;
		i8042_queue(k, 0xfa, false);
		if (command == 0xf0 && byte == 0) {
			/* the set number goes through the translation too */
			static const uint8_t translated[3] = { 0x43, 0x41,
							       0x3f };

			i8042_queue(k,
				    (k->command_byte & CMD_BYTE_XLAT)
					    ? translated[k->scan_set - 1]
					    : k->scan_set,
				    false);
		} else if (command == 0xf0 && byte <= 3) {
			k->scan_set = byte;
		}
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
		k->scan_set = 2;
		k->scanning = true;
		i8042_queue(k, 0xfa, false);
		i8042_queue(k, 0xaa, false);
		break;
	case 0xf4:
		k->scanning = true;
		i8042_queue(k, 0xfa, false);
		break;
	case 0xf5: /* disable scanning, defaults */
		k->scanning = false;
		k->scan_set = 2;
		i8042_queue(k, 0xfa, false);
		break;
	case 0xf6:
		k->scan_set = 2;
		i8042_queue(k, 0xfa, false);
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
		if (k->aux_pending == 0xf3) {
			k->sample_rates[0] = k->sample_rates[1];
			k->sample_rates[1] = k->sample_rates[2];
			k->sample_rates[2] = byte;
			if (k->sample_rates[0] == 200 &&
			    k->sample_rates[1] == 100 &&
			    k->sample_rates[2] == 80)
				k->mouse_id = 3;
		}
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
	case 0xf2: /* identify: standard or wheel mouse */
		i8042_queue(k, 0xfa, true);
		i8042_queue(k, k->mouse_id, true);
		break;
	case 0xf4:
		k->mouse_reporting = true;
		i8042_queue(k, 0xfa, true);
		break;
	case 0xf5:
	case 0xf6:
		k->mouse_reporting = false;
		i8042_queue(k, 0xfa, true);
		break;
	case 0xe9: /* status request */
		i8042_queue(k, 0xfa, true);
		i8042_queue(k, 0x00, true);
		i8042_queue(k, 0x02, true);
		i8042_queue(k, 0x64, true);
		break;
	case 0xff:
		k->mouse_reporting = false;
		k->mouse_id = 0;
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
			/* the next byte raises a new edge */
			if (k->kbd_irq) {
				k->kbd_irq = false;
				vmm_set_irq(k->vm, KBD_IRQ, false);
			}
			if (k->aux_irq) {
				k->aux_irq = false;
				vmm_set_irq(k->vm, AUX_IRQ, false);
			}
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
	k->scan_set = 2;
	k->scanning = true;
	k->mouse_reporting = false;
	k->mouse_id = 0;
	memset(k->sample_rates, 0, sizeof(k->sample_rates));
	pthread_mutex_unlock(&k->lock);
}

/* ---- input from front ends (vmm/input.h) -------------------------------*/

/* Set 1 make code -> set 2 (the 8042's translation table, inverted) */
static const uint8_t set1_to_set2[0x59] = {
	0x00, 0x76, 0x16, 0x1e, 0x26, 0x25, 0x2e, 0x36, 0x3d, 0x3e, 0x46, 0x45,
	0x4e, 0x55, 0x66, 0x0d, 0x15, 0x1d, 0x24, 0x2d, 0x2c, 0x35, 0x3c, 0x43,
	0x44, 0x4d, 0x54, 0x5b, 0x5a, 0x14, 0x1c, 0x1b, 0x23, 0x2b, 0x34, 0x33,
	0x3b, 0x42, 0x4b, 0x4c, 0x52, 0x0e, 0x12, 0x5d, 0x1a, 0x22, 0x21, 0x2a,
	0x32, 0x31, 0x3a, 0x41, 0x49, 0x4a, 0x59, 0x7c, 0x11, 0x29, 0x58, 0x05,
	0x06, 0x04, 0x0c, 0x03, 0x0b, 0x83, 0x0a, 0x01, 0x09, 0x77, 0x7e, 0x6c,
	0x75, 0x7d, 0x7b, 0x6b, 0x73, 0x74, 0x79, 0x69, 0x72, 0x7a, 0x70, 0x71,
	0x84, 0x00, 0x61, 0x78, 0x07,
};

static const struct {
	uint8_t set1, set2;
} extended_keys[] = {
	{ 0x1c, 0x5a }, { 0x1d, 0x14 }, { 0x35, 0x4a }, { 0x37, 0x7c },
	{ 0x38, 0x11 }, { 0x47, 0x6c }, { 0x48, 0x75 }, { 0x49, 0x7d },
	{ 0x4b, 0x6b }, { 0x4d, 0x74 }, { 0x4f, 0x69 }, { 0x50, 0x72 },
	{ 0x51, 0x7a }, { 0x52, 0x70 }, { 0x53, 0x71 }, { 0x5b, 0x1f },
	{ 0x5c, 0x27 }, { 0x5d, 0x2f },
};

static int i8042_room(const struct i8042 *k, unsigned bytes)
{
	return I8042_QUEUE - k->count >= bytes ? 0 : -EAGAIN;
}

int i8042_key_event(struct i8042 *k, input_scancode key, bool down)
{
	bool extended = (key >> 8) == 0xe0;
	uint8_t code = key & 0xff;
	uint8_t set2 = 0;
	int ret;

	if ((key >> 8) && !extended)
		return -EINVAL;
	if (extended) {
		for (unsigned i = 0;
		     i < sizeof(extended_keys) / sizeof(extended_keys[0]); i++)
			if (extended_keys[i].set1 == code)
				set2 = extended_keys[i].set2;
	} else if (code < sizeof(set1_to_set2)) {
		set2 = set1_to_set2[code];
	}
	if (!set2)
		return -EINVAL;
	pthread_mutex_lock(&k->lock);
	ret = i8042_room(k, 3);
	if (ret || !k->scanning || (k->command_byte & CMD_BYTE_KBD_DISABLED)) {
		pthread_mutex_unlock(&k->lock);
		return ret;
	}
	if (extended)
		i8042_queue(k, 0xe0, false);
	if (k->scan_set == 1 || (k->command_byte & CMD_BYTE_XLAT)) {
		i8042_queue(k, down ? code : code | 0x80, false);
	} else {
		if (!down)
			i8042_queue(k, 0xf0, false);
		i8042_queue(k, set2, false);
	}
	i8042_update(k);
	pthread_mutex_unlock(&k->lock);
	return 0;
}

static int clamp(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

int i8042_mouse_event(struct i8042 *k, int dx, int dy, int wheel,
		      unsigned buttons)
{
	int ret;

	pthread_mutex_lock(&k->lock);
	ret = i8042_room(k, 4);
	if (ret || !k->mouse_reporting ||
	    (k->command_byte & CMD_BYTE_AUX_DISABLED)) {
		pthread_mutex_unlock(&k->lock);
		return ret;
	}
	/* 9-bit two's complement movement, y up */
	dx = clamp(dx, -255, 255);
	dy = clamp(-dy, -255, 255);
	i8042_queue(k,
		    0x08 | (buttons & 7) | (dx < 0 ? 0x10 : 0) |
			    (dy < 0 ? 0x20 : 0),
		    true);
	i8042_queue(k, (uint8_t)dx, true);
	i8042_queue(k, (uint8_t)dy, true);
	if (k->mouse_id == 3)
		i8042_queue(k, (uint8_t)clamp(wheel, -8, 7), true);
	i8042_update(k);
	pthread_mutex_unlock(&k->lock);
	return 0;
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
