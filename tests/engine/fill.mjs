// Fill XForms with ODK's JavaScript form engine (@getodk/xforms-engine, the engine of ODK Web
// Forms), answering every question generically, as a person clicking through would.
//
//   node fill.mjs FORM.xml [--media DIR] [--out DIR]
//       prints the submission XML; writes the attachments into DIR (default: none written)
//   node fill.mjs --jobs JOBS.json
//       JOBS.json: [{"id": ..., "form": "path.xml", "media": "dir"}, ...]; prints one JSON
//       line per job: {id, status, error, violations, xml, attachments, labels, languages,
//       answered, ms}; status is "ready" (the engine says the payload may be sent),
//       "load-failed", "fill-failed" or "not-ready" (never to be sent).
//
// Every question is answered: text, numbers, dates and times, selects (options of cascades
// are read after the answers they depend on), geopoint/geotrace/geoshape, ranks, ranges,
// acknowledgements, uploads (a small file of the right kind), and two instances of every repeat
// whose count the form does not set. A value the form's constraint refuses is replaced by the
// next candidate; a question left without an acceptable value stays empty, and the engine's
// verdict on the payload (its status and violations) is reported as it is.

import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { JSDOM } from 'jsdom';

// The engine parses XML with the DOM of a browser; jsdom gives Node one. Its bundled
// tree-sitter (WebAssembly, inlined) asks for __dirname when it sees Node.
const here = path.dirname(fileURLToPath(import.meta.url));
const { window } = new JSDOM('');
for (const name of [
	'DOMParser',
	'XMLSerializer',
	'Node',
	'Element',
	'Document',
	'XMLDocument',
	'NodeFilter',
	'Attr',
	'Text',
	'CDATASection',
	'ProcessingInstruction',
	'Comment',
	'DocumentFragment',
	'document',
]) {
	globalThis[name] = window[name];
}
globalThis.__dirname = path.join(here, 'node_modules', '@getodk', 'xforms-engine', 'dist');
const { loadForm } = await import('@getodk/xforms-engine');

const TODAY = new Date().toISOString().slice(0, 10);
const NEXT_YEAR = new Date(Date.now() + 365 * 86400000).toISOString().slice(0, 10);
// Values tried in turn until the question's constraint accepts one (codes, phone numbers...).
const CANDIDATES = {
	string: ['E07', 'Texte de test', '12345678', 'abc12', '5555555555', 'a', '1', 'test@example.org'],
	int: ['2', '1', '3', '0', '5', '10', '18', '25', '30', '50', '100', '2024'],
	decimal: ['2.5', '1', '0.5', '3', '0', '10', '18', '25', '100'],
	date: [TODAY, '2024-05-01', '2000-01-01', '1990-06-15', NEXT_YEAR],
	time: ['10:30:00.000', '08:00:00.000', '14:15:00.000'],
	dateTime: [`${TODAY}T10:30:00.000`, '2024-05-01T10:30:00.000'],
	geopoint: ['12.6392 -8.0029 350 5', '14.4974 -4.1970 270 8'],
	geotrace: ['12.6392 -8.0029 350 5;12.6400 -8.0100 350 5'],
	geoshape: ['12.6392 -8.0029 0 0;12.6400 -8.0100 0 0;12.6450 -8.0050 0 0;12.6392 -8.0029 0 0'],
	barcode: ['1234567890128'],
	boolean: ['true', 'false'],
	intent: ['intent'],
};
// Small files that open as what they claim to be.
const JPEG = Buffer.from(
	'/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgKCgkICQkKDA8MCgsOCwkJDRENDg8QEBEQCgwSExIQEw8QEBD/yQALCAABAAEBAREA/8wABgAQEAX/2gAIAQEAAD8A0s8g/9k=',
	'base64'
);
const WAV = Buffer.concat([
	Buffer.from('RIFF', 'ascii'),
	Buffer.from([40, 0, 0, 0]),
	Buffer.from('WAVEfmt ', 'ascii'),
	Buffer.from([16, 0, 0, 0, 1, 0, 1, 0, 0x40, 0x1f, 0, 0, 0x80, 0x3e, 0, 0, 2, 0, 16, 0]),
	Buffer.from('data', 'ascii'),
	Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]),
]);

const uploadFor = (node) => {
	const accept = node.nodeOptions?.media?.accept ?? '';
	const base = node.currentState.reference.split('/').pop().replace(/\[\d+\]$/, '');
	if (accept.startsWith('image')) return new File([JPEG], `${base}.jpg`, { type: 'image/jpeg' });
	if (accept.startsWith('audio')) return new File([WAV], `${base}.wav`, { type: 'audio/wav' });
	if (accept.startsWith('video')) {
		return new File([Buffer.from('not really a video')], `${base}.mp4`, { type: 'video/mp4' });
	}
	return new File([Buffer.from('fichier de test\n')], `${base}.txt`, { type: 'text/plain' });
};

const isValid = (node) => node.validationState.constraint.valid;

const tryValues = (node, values, set) => {
	for (const value of values) {
		set(value);
		if (isValid(node)) return true;
	}
	set(null);
	return false;
};

const isEmpty = (node) => {
	const value = node.currentState.value;
	if (node.nodeType === 'trigger') return value !== true;
	return value == null || value === '' || (Array.isArray(value) && value.length === 0);
};

// The order in which a select's options are tried: the strategy's preferred answer first
// ("yes", "no", or the last option), and in the n-th instance of a repeat the n-th option, so
// that two household members are not both the head of household.
function optionOrder(options, ctx) {
	let ordered = ctx.strategy.prefer === 'last' ? [...options].reverse() : [...options];
	const shift = ctx.index % Math.max(ordered.length, 1);
	ordered = [...ordered.slice(shift), ...ordered.slice(0, shift)];
	const word = ctx.strategy.prefer;
	return ordered.includes(word) ? [word, ...ordered.filter((value) => value !== word)] : ordered;
}

function answerSelect(node, ctx) {
	const options = node.currentState.valueOptions.map((item) => item.value);
	if (options.length === 0) return false;
	const ordered = optionOrder(options, ctx);
	if (node.selectType === 'select') {
		const sets = [ordered.slice(0, 2), ...ordered.map((value) => [value])];
		return tryValues(node, sets, (values) => node.selectValues(values ?? []));
	}
	return tryValues(node, ordered, (value) => node.selectValue(value));
}

function answerRange(node) {
	const bounds = node.definition.bodyElement.bounds;
	const start = Number(bounds.start);
	const step = Number(bounds.step) || 1;
	const values = [start, start + step, Number(bounds.end)].map(String);
	return tryValues(node, values, (value) => node.setValue(value ?? ''));
}

function answer(node, ctx) {
	switch (node.nodeType) {
		case 'input': {
			const candidates = CANDIDATES[node.valueType];
			if (!candidates) return false;
			return tryValues(node, candidates, (value) => node.setValue(value ?? ''));
		}
		case 'select':
			return answerSelect(node, ctx);
		case 'rank': {
			const values = node.currentState.valueOptions.map((item) => item.value);
			node.setValues(values);
			return isValid(node);
		}
		case 'range':
			return answerRange(node);
		case 'trigger':
			node.setValue(true);
			return isValid(node);
		case 'upload': {
			node.setValue(uploadFor(node));
			return isValid(node);
		}
		default:
			return false;
	}
}

const REPEAT_INSTANCES = 2;

// One pass over the form in document order. Children are read when their parent is visited,
// so a question whose options or relevance depend on an earlier answer sees that answer.
function walk(node, ctx) {
	const current = node.currentState;
	if (!current.relevant) return;
	switch (node.nodeType) {
		case 'root':
		case 'group':
		case 'repeat-instance':
			for (const child of current.children) walk(child, ctx);
			return;
		case 'repeat-range:uncontrolled':
		case 'repeat-range:controlled':
			if (node.nodeType === 'repeat-range:uncontrolled') {
				while (current.children.length < REPEAT_INSTANCES) node.addInstances();
			}
			current.children.forEach((child, index) => walk(child, { ...ctx, index }));
			return;
		case 'model-value':
		case 'note':
			return;
		default:
			break;
	}
	// A default the form gives is kept, unless its own constraint refuses it.
	if (current.readonly || (!isEmpty(node) && isValid(node))) return;
	if (answer(node, ctx)) ctx.state.answered += 1;
	else ctx.state.unanswered.push(current.reference);
}

// Ways of answering, tried in turn until the engine calls the payload ready: real forms check
// consistency (an age that contradicts another, a required warning note), and one set of
// generic answers can trip a check that another does not.
const STRATEGIES = [{ prefer: 'yes' }, { prefer: 'no' }, { prefer: 'last' }];

async function text(file) {
	return typeof file.text === 'function' ? file.text() : String(file);
}

// The chosen options' labels in every language of the form (and the language restored).
function choiceLabels(root) {
	const selects = [];
	const collect = (node) => {
		if (!node.currentState.relevant) return;
		if (node.nodeType === 'select' && node.currentState.value.length) selects.push(node);
		for (const child of node.currentState.children ?? []) collect(child);
	};
	collect(root);
	const labels = {};
	const active = root.currentState.activeLanguage;
	for (const language of root.languages) {
		if (language.isSyntheticDefault) continue;
		root.setLanguage(language);
		for (const node of selects) {
			const reference = node.currentState.reference;
			labels[reference] ??= {};
			labels[reference][language.language] = node.currentState.value.map(
				(value) => node.getValueOption(value)?.label?.asString ?? null
			);
		}
	}
	if (!active.isSyntheticDefault) root.setLanguage(active);
	return labels;
}

export async function fill(formPath, mediaDir) {
	const started = performance.now();
	const result = { status: 'load-failed', error: null, violations: [], attachments: [] };
	const xml = await readFile(formPath, 'utf8');
	const fetchFormAttachment = async (url) => {
		const name = decodeURIComponent(String(url).split('/').pop());
		try {
			return new Response(await readFile(path.join(mediaDir ?? '', name)));
		} catch {
			return new Response(`${name} is not among the form's media`, { status: 404 });
		}
	};
	let form;
	try {
		form = await loadForm(xml, { fetchFormAttachment });
	} catch (caught) {
		result.error = String(caught?.message ?? caught);
		return finish(result, started);
	}
	if (form.status === 'failure') {
		const causes = form.error?.causes ?? [];
		result.error = [form.error?.message, ...causes.map((c) => c?.message ?? String(c))]
			.filter(Boolean)
			.join(': ');
		return finish(result, started);
	}
	let root;
	let payload;
	result.attempts = 0;
	for (const strategy of STRATEGIES) {
		const state = { answered: 0, unanswered: [] };
		result.attempts += 1;
		try {
			root = form.createInstance({ preloadProperties: { deviceID: 'fill.mjs:engine-test' } }).root;
			result.languages = root.languages.filter((l) => !l.isSyntheticDefault).map((l) => l.language);
			walk(root, { state, strategy, index: 0 });
			// A second pass answers what later answers made relevant or required.
			state.unanswered = [];
			walk(root, { state, strategy, index: 0 });
			result.labels = choiceLabels(root);
		} catch (caught) {
			result.status = 'fill-failed';
			result.error = String(caught?.stack ?? caught);
			return finish(result, started);
		}
		result.answered = state.answered;
		result.unanswered = state.unanswered;
		payload = await root.prepareInstancePayload({ payloadType: 'monolithic' });
		if (payload.status === 'ready') break;
	}
	result.status = payload.status === 'ready' ? 'ready' : 'not-ready';
	result.violations = (payload.violations ?? []).map((v) => ({
		reference: v.reference,
		condition: v.violation?.condition,
		message: v.violation?.message?.asString ?? null,
	}));
	const [data] = payload.data;
	for (const [name, file] of data.entries()) {
		if (name === 'xml_submission_file') {
			result.xml = await text(file);
		} else {
			const bytes = Buffer.from(await file.arrayBuffer());
			result.attachments.push({ name: file.name || name, type: file.type, base64: bytes.toString('base64') });
		}
	}
	return finish(result, started);
}

function finish(result, started) {
	result.ms = Math.round(performance.now() - started);
	return result;
}

async function main(argv) {
	const option = (name) => {
		const index = argv.indexOf(name);
		return index >= 0 ? argv[index + 1] : undefined;
	};
	const jobs = option('--jobs');
	if (jobs) {
		for (const job of JSON.parse(await readFile(jobs, 'utf8'))) {
			let result;
			try {
				result = await fill(job.form, job.media);
			} catch (caught) {
				result = { status: 'fill-failed', error: String(caught?.stack ?? caught) };
			}
			process.stdout.write(`${JSON.stringify({ id: job.id, ...result })}\n`);
		}
		return 0;
	}
	const formPath = argv.find((arg, index) => !arg.startsWith('--') && !argv[index - 1]?.startsWith('--'));
	if (!formPath) {
		process.stderr.write('usage: node fill.mjs FORM.xml [--media DIR] [--out DIR] | --jobs JOBS.json\n');
		return 2;
	}
	const result = await fill(formPath, option('--media'));
	if (result.status !== 'ready') {
		process.stderr.write(`${result.status}: ${result.error ?? JSON.stringify(result.violations)}\n`);
		return 1;
	}
	process.stdout.write(result.xml);
	const out = option('--out');
	if (out) {
		await mkdir(out, { recursive: true });
		for (const file of result.attachments) {
			await writeFile(path.join(out, path.basename(file.name)), Buffer.from(file.base64, 'base64'));
		}
	}
	for (const file of result.attachments) process.stderr.write(`attachment: ${file.name} (${file.type})\n`);
	return 0;
}

process.exitCode = await main(process.argv.slice(2));
