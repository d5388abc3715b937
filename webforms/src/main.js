// ODK Web Forms on a page of merit-collect: the console's form page and a public link's page.
//
// The page (server/web/templates/web/webform.html) says everything in data attributes of
// #odk-web-form, so that no inline script is needed (the page's Content-Security-Policy has
// none): where the XForm, its media and the record being edited are, where records are sent,
// the CSRF token of a console session, the page's language, and the page's own words.
//
// Records are posted as ODK Collect posts them (multipart, xml_submission_file first, then the
// files), to the same OpenRosa route, so they go through the same intake: a resend is a
// duplicate, an edit carries meta/deprecatedID. Web Forms emits a payload only when the form
// has no constraint or required violation; a payload whose status is not "ready" is refused
// here too, and never sent.

import { createApp, h } from 'vue';
import { OdkWebForm, POST_SUBMIT__NEW_INSTANCE, webFormsPlugin } from '@getodk/web-forms';

const host = document.getElementById('odk-web-form');
const config = host.dataset;
const words = JSON.parse(document.getElementById('odk-web-form-words').textContent);
const statusBox = document.getElementById('odk-web-form-status');

function say(text, kind) {
  statusBox.textContent = text;
  statusBox.dataset.kind = kind;
  statusBox.hidden = !text;
}

// The form's languages are its own (itext translations). Open it in the page's language when
// the form has it: "Français (fr)", "French", "fr"... are the page's "fr".
const LANGUAGE_NAMES = {
  fr: ['fr', 'french', 'français', 'francais'],
  en: ['en', 'english', 'anglais'],
};

function languageMatches(lang, pageLanguage) {
  const names = LANGUAGE_NAMES[pageLanguage] || [pageLanguage];
  const lower = lang.trim().toLowerCase();
  const code = /\(([a-z-]+)\)$/.exec(lower);
  if (code) return code[1] === pageLanguage || code[1].startsWith(`${pageLanguage}-`);
  return names.includes(lower);
}

function inPageLanguage(xml, pageLanguage) {
  const doc = new DOMParser().parseFromString(xml, 'application/xml');
  if (doc.getElementsByTagName('parsererror').length > 0) return xml;
  const translations = Array.from(doc.getElementsByTagNameNS('*', 'translation'));
  const chosen = translations.find((t) => languageMatches(t.getAttribute('lang') || '', pageLanguage));
  if (!chosen) return xml;
  for (const translation of translations) translation.removeAttribute('default');
  chosen.setAttribute('default', 'true()');
  return new XMLSerializer().serializeToString(doc);
}

async function fetchOk(url, what) {
  const response = await fetch(url, { credentials: 'same-origin' });
  if (!response.ok) throw new Error(`${what}: ${response.status}`);
  return response;
}

// Media are named by their file name in the form (jr://images/x.png, jr://file/x.csv...).
function fetchFormAttachment(url) {
  const name = decodeURIComponent(url.pathname.split('/').pop());
  return fetch(config.mediaUrl + encodeURIComponent(name), { credentials: 'same-origin' });
}

function openRosaMessage(text) {
  const doc = new DOMParser().parseFromString(text, 'application/xml');
  const node = doc.getElementsByTagNameNS('*', 'message')[0];
  return node ? node.textContent.trim() : '';
}

async function post(formData) {
  const headers = { 'X-OpenRosa-Version': '1.0' };
  if (config.csrf) headers['X-CSRF-Token'] = config.csrf;
  let response;
  try {
    response = await fetch(config.submitUrl, {
      method: 'POST',
      body: formData,
      headers,
      credentials: 'same-origin',
    });
  } catch {
    return { ok: false, message: words.offline };
  }
  const message = openRosaMessage(await response.text());
  return { ok: response.status === 201, message: message || `${words.failed} (${response.status})` };
}

const onceKey = config.onceKey ? `merit-once:${config.onceKey}` : null;
let sending = false;

async function submitChunked(payload, callback) {
  if (payload.status !== 'ready' || (payload.violations && payload.violations.length > 0)) {
    say(words.notReady, 'error');
    callback();
    return;
  }
  if (sending) return;
  sending = true;
  say(words.sending, 'progress');
  try {
    let last = null;
    for (const part of payload.data) {
      last = await post(part);
      if (!last.ok) {
        say(last.message, 'error');
        callback();
        return;
      }
    }
    say(last ? last.message : words.sent, 'success');
    if (onceKey) {
      window.localStorage.setItem(onceKey, new Date().toISOString());
      closeOnce();
      return;
    }
    if (config.doneUrl) {
      window.location.assign(config.doneUrl);
      return;
    }
    callback({ next: POST_SUBMIT__NEW_INSTANCE });
  } finally {
    sending = false;
  }
}

function closeOnce() {
  host.hidden = true;
  say(words.onceDone, 'success');
}

function editInstance() {
  if (!config.instanceUrl) return undefined;
  const names = JSON.parse(config.instanceFiles || '[]');
  return {
    resolveInstance: async () => (await fetchOk(config.instanceUrl, 'record')).text(),
    attachmentFileNames: names,
    // The engine reads the response itself (its type names the file's).
    resolveAttachment: (name) => fetchOk(config.instanceFileUrl + encodeURIComponent(name), name),
  };
}

async function start() {
  if (onceKey && window.localStorage.getItem(onceKey)) {
    closeOnce();
    return;
  }
  say(words.loading, 'progress');
  let xml;
  try {
    xml = await (await fetchOk(config.formUrl, 'form')).text();
  } catch {
    say(words.loadFailed, 'error');
    return;
  }
  const props = {
    formXml: inPageLanguage(xml, config.lang),
    fetchFormAttachment,
    missingResourceBehavior: 'ERROR',
    submissionMaxSize: Number(config.maxBytes),
    trackDevice: true,
    onSubmitChunked: submitChunked,
  };
  const edit = editInstance();
  if (edit) props.editInstance = edit;
  const app = createApp({ render: () => h(OdkWebForm, props) });
  app.use(webFormsPlugin);
  app.mount(host);
  say('', 'idle');
  host.dataset.state = 'mounted';
}

start();
