#!/usr/bin/env node
// gen_corpus.js: writes the labelled masking corpus that tests/mask/corpus_eval.c scores.
//
// Usage: node tests/mask/gen_corpus.js [OUT.tsv] [--seed N] [--n N]
// (needs `npm install` in tests/mask first: @faker-js/faker, pinned in package.json).
//
// One line per case, tab-separated:  LABEL <TAB> VALUE [<TAB> NEEDLE]
//   LABEL  a built-in detector name (email, credit_card, ssn, phone, iban, ipv4, ipv6,
//          secret, jwt) for a positive, or "none" for a hard negative;
//   VALUE  the text given to mask_text (a bare value, or a sentence with the value inside);
//   NEEDLE for positives, the sensitive substring that must not survive masking.
// Values never contain tabs or newlines. The same seed gives the same corpus.
'use strict';
const fs = require('fs');
const { faker } = require('@faker-js/faker');

const args = process.argv.slice(2);
let out = null, seed = 4242, n = 2000;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--seed') seed = Number(args[++i]);
  else if (args[i] === '--n') n = Number(args[++i]);
  else out = args[i];
}
faker.seed(seed);

const lines = [];
const clean = (s) => String(s).replace(/[\t\r\n]/g, ' ');
function pos(det, value, needle) {
  lines.push(`${det}\t${clean(value)}\t${clean(needle === undefined ? value : needle)}`);
}
function neg(value) {
  lines.push(`none\t${clean(value)}`);
}
const pick = (a) => a[faker.number.int({ min: 0, max: a.length - 1 })];
const digits = (k) => faker.string.numeric({ length: k, allowLeadingZeros: true });

function luhnOk(d) {
  let sum = 0;
  for (let i = 0; i < d.length; i++) {
    let v = d.charCodeAt(d.length - 1 - i) - 48;
    if (i & 1) { v *= 2; if (v > 9) v -= 9; }
    sum += v;
  }
  return sum % 10 === 0;
}
function luhnComplete(body) { // append the check digit
  for (let c = 0; c < 10; c++) if (luhnOk(body + c)) return body + c;
  throw new Error('unreachable');
}
const b64url = (buf) => Buffer.from(buf).toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

// ---- positives ---------------------------------------------------------------------------
const gen = {
  email() {
    return pick([
      () => faker.internet.email(),
      () => faker.internet.email({ provider: faker.internet.domainName() }),
      () => faker.internet.exampleEmail(),
      () => faker.internet.email({ firstName: faker.person.firstName(), lastName: faker.person.lastName(), provider: 'corp.' + faker.internet.domainName() }),
    ])();
  },
  credit_card() {
    // faker's issuer formats, kept when they are real card numbers (Luhn, 13-19 digits);
    // some printed with spaces instead of dashes
    for (;;) {
      const issuer = pick(['visa', 'mastercard', 'discover', 'american_express', 'diners_club', 'jcb', 'maestro', 'switch', 'solo', 'laser', 'instapayment']);
      let v;
      try { v = faker.finance.creditCardNumber(issuer); } catch (e) { v = faker.finance.creditCardNumber(); }
      const d = v.replace(/\D/g, '');
      if (d.length < 13 || d.length > 19 || !luhnOk(d)) continue;
      const style = faker.number.int({ min: 0, max: 2 });
      if (style === 1) v = v.replace(/-/g, ' ');
      if (style === 2) v = d;
      return v;
    }
  },
  ssn() {
    let area;
    do area = faker.number.int({ min: 1, max: 899 }); while (area === 666);
    const g = faker.number.int({ min: 1, max: 99 }), s = faker.number.int({ min: 1, max: 9999 });
    return `${String(area).padStart(3, '0')}-${String(g).padStart(2, '0')}-${String(s).padStart(4, '0')}`;
  },
  phone() {
    const nanp = () => `${faker.number.int({ min: 2, max: 9 })}${digits(2)}`;
    return pick([
      () => faker.phone.number(), // en_US formats; the extension is not part of the number
      () => faker.phone.number(),
      () => `+1 ${nanp()} ${nanp()} ${digits(4)}`,
      () => `+1${nanp()}${nanp()}${digits(4)}`,
      () => `+44 20 ${digits(4)} ${digits(4)}`,
      () => `+44 7${digits(3)} ${digits(6)}`,
      () => `+49 30 ${digits(8)}`,
      () => `+33 ${faker.number.int({ min: 1, max: 9 })} ${digits(2)} ${digits(2)} ${digits(2)} ${digits(2)}`,
      () => `+61 ${faker.number.int({ min: 2, max: 4 })} ${digits(4)} ${digits(4)}`,
      () => `+91 ${faker.number.int({ min: 6, max: 9 })}${digits(4)} ${digits(5)}`,
      () => `+353-1-${digits(3)}-${digits(4)}`,
      () => `(${nanp()}) ${nanp()}-${digits(4)}`,
      () => `${nanp()}.${nanp()}.${digits(4)}`,
    ])();
  },
  iban() {
    return faker.finance.iban({ formatted: faker.datatype.boolean() });
  },
  ipv4() {
    return pick([() => faker.internet.ipv4(), () => `192.168.${faker.number.int(255)}.${faker.number.int({ min: 1, max: 254 })}`, () => `10.${faker.number.int(255)}.${faker.number.int(255)}.${faker.number.int(255)}`])();
  },
  ipv6() {
    const h = () => faker.string.hexadecimal({ length: { min: 1, max: 4 }, prefix: '', casing: 'lower' });
    return pick([
      () => faker.internet.ipv6(),
      () => faker.internet.ipv6(),
      () => `2001:db8:${h()}::${h()}`,
      () => `fe80::${h()}:${h()}:${h()}:${h()}`,
      () => faker.internet.ipv6().toUpperCase(),
    ])();
  },
  secret() {
    const alnum = (k) => faker.string.alphanumeric({ length: k });
    return pick([
      () => 'AKIA' + faker.string.alphanumeric({ length: 16, casing: 'upper' }),
      () => 'ASIA' + faker.string.alphanumeric({ length: 16, casing: 'upper' }),
      () => 'ghp_' + alnum(36),
      () => 'gho_' + alnum(36),
      () => 'github_pat_' + alnum(22) + '_' + alnum(59),
      () => `xoxb-${digits(12)}-${digits(12)}-${alnum(24)}`,
      () => 'sk_live_' + alnum(24),
      () => 'sk_test_' + alnum(24),
      () => 'AIza' + faker.string.fromCharacters('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-', 35),
      () => ({ v: `password=${faker.internet.password({ length: 12 })}`, needle: null }),
      () => ({ v: `"client_secret": "${alnum(32)}"`, needle: null }),
      () => ({ v: `api_key: ${alnum(32)}`, needle: null }),
      () => `-----BEGIN RSA PRIVATE KEY----- ${b64url(faker.string.sample(48))} -----END RSA PRIVATE KEY-----`,
    ])();
  },
  jwt() {
    const header = { alg: pick(['HS256', 'RS256', 'ES256']), typ: 'JWT' };
    if (faker.datatype.boolean()) header.kid = faker.string.alphanumeric(8);
    const payload = { sub: faker.string.uuid(), name: faker.person.fullName(), email: faker.internet.email(), iat: faker.number.int({ min: 1.6e9, max: 1.8e9 }) };
    const sig = Buffer.from(faker.string.hexadecimal({ length: header.alg === 'HS256' ? 64 : 128, prefix: '' }), 'hex');
    return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}.${b64url(sig)}`;
  },
};

// the sensitive part of a positive (what must be gone after masking)
function needleOf(det, v) {
  if (typeof v === 'object') {
    // assignments: the value after the key
    const m = v.v.match(/[:=]\s*"?([^"\s]+)"?$/);
    return { v: v.v, needle: m[1] };
  }
  if (det === 'phone') return { v, needle: v.replace(/ x\d+$/, '') };
  return { v, needle: v };
}

const templates = [
  (x) => `Please contact ${x} for details.`,
  (x) => `note: customer gave ${x}; verified by phone on ${faker.date.recent().toISOString().slice(0, 10)}`,
  (x) => `${faker.lorem.sentence()} ${x} ${faker.lorem.sentence()}`,
  (x) => `"${x}",${faker.number.int(999)},${faker.commerce.price()}`,
  (x) => `{"id": ${faker.number.int(99999)}, "value": "${x}", "ok": true}`,
  (x) => `Ünïcödé 名前 ${x} — café ✓`,
];

const dets = Object.keys(gen);
for (const det of dets) {
  for (let i = 0; i < n; i++) {
    const { v, needle } = needleOf(det, gen[det]());
    pos(det, v, needle);
  }
  for (let i = 0; i < n / 4; i++) {
    const { v, needle } = needleOf(det, gen[det]());
    pos(det, pick(templates)(v), needle);
  }
}

// ---- hard negatives ----------------------------------------------------------------------
function nonLuhn(k) {
  for (;;) {
    const d = faker.string.numeric({ length: k, allowLeadingZeros: false });
    if (!luhnOk(d)) return d;
  }
}
function isbn10() {
  const d = digits(9);
  let s = 0;
  for (let i = 0; i < 9; i++) s += (10 - i) * (d.charCodeAt(i) - 48);
  const c = (11 - (s % 11)) % 11;
  return `${d[0]}-${d.slice(1, 4)}-${d.slice(4, 9)}-${c === 10 ? 'X' : c}`;
}
const negs = [
  () => faker.string.uuid(),
  () => faker.string.uuid().toUpperCase(),
  () => faker.commerce.isbn(),
  () => faker.commerce.isbn().replace(/-/g, ''),
  () => faker.commerce.isbn(10),
  () => isbn10(),
  () => `ORD-${faker.number.int({ min: 2015, max: 2030 })}-${digits(6)}`,
  () => `#${faker.number.int({ min: 100000, max: 99999999 })}`,
  () => `INV${digits(10)}`,
  () => `order ${digits(12)} shipped`,
  () => faker.date.anytime().toISOString(),
  () => faker.date.anytime().toISOString().replace('T', ' ').slice(0, 19),
  () => faker.date.anytime().toISOString().slice(0, 10),
  () => faker.date.anytime().toUTCString(),
  () => faker.date.anytime().toISOString().replace('Z', '+05:30'),
  () => faker.date.anytime().toLocaleDateString('en-US'),
  () => String(faker.date.anytime().getTime()), // epoch milliseconds (13 digits)
  () => String(Math.floor(faker.date.anytime().getTime() / 1000)),
  () => faker.date.anytime().toISOString().replace(/\D/g, '').slice(0, 14), // 20240115102345
  () => `${String(faker.number.int(23)).padStart(2, '0')}:${String(faker.number.int(59)).padStart(2, '0')}:${String(faker.number.int(59)).padStart(2, '0')}`,
  () => faker.commerce.price({ symbol: '$' }),
  () => `€${faker.number.int(999999).toLocaleString('en-US')}.${digits(2)}`,
  () => faker.finance.amount({ min: 1000, max: 9999999, dec: 2, autoFormat: true }),
  () => faker.system.semver(),
  () => `v${faker.system.semver()}`,
  () => `${faker.system.semver()}.${faker.number.int(99)}.${faker.number.int(99)}`, // 1.2.3.4.5
  () => `v${faker.system.semver()}.${faker.number.int(999)}`,
  () => `version ${faker.number.int(20)}.${faker.number.int(9)}.${faker.number.int(99999)}.${faker.number.int(9999)}`,
  () => faker.lorem.word(),
  () => faker.lorem.sentence(),
  () => faker.lorem.paragraph(),
  () => faker.company.catchPhrase(),
  () => faker.location.streetAddress(true),
  () => faker.location.zipCode(),
  () => `${faker.location.latitude()}, ${faker.location.longitude()}`,
  () => nonLuhn(16),
  () => nonLuhn(16).replace(/(\d{4})(?=\d)/g, '$1-'),
  () => nonLuhn(faker.number.int({ min: 13, max: 19 })),
  () => faker.string.numeric(20),
  () => faker.string.numeric(9), // bare 9 digits: not an SSN by value
  () => faker.string.numeric(10),
  () => faker.finance.accountNumber(),
  () => faker.finance.routingNumber(),
  () => faker.finance.bitcoinAddress(),
  () => faker.git.commitSha(),
  () => faker.string.hexadecimal({ length: 32, prefix: '' }),
  () => faker.internet.mac(),
  () => faker.internet.url(),
  () => faker.internet.domainName(),
  () => faker.internet.userName(),
  () => faker.internet.password({ length: 12 }), // a bare random string is not a secret by value
  () => faker.commerce.productName(),
  () => faker.person.fullName(),
  () => `000-${digits(2)}-${digits(4)}`,
  () => `666-${digits(2)}-${digits(4)}`,
  () => `9${digits(2)}-${digits(2)}-${digits(4)}`,
  () => `${faker.number.int({ min: 100, max: 899 })}-00-${digits(4)}`,
  () => `${faker.number.int({ min: 100, max: 899 })}-${faker.number.int({ min: 10, max: 99 })}-0000`,
  () => `1${digits(2)}-${digits(3)}-${digits(4)}`, // area code cannot start with 1
  () => `std::vector<int> at ${faker.number.int(23)}:${faker.number.int(59)}:${faker.number.int(59)}`,
  () => `Reset your password: click the link sent to your inbox.`,
  () => `Total ${faker.number.int(999)} ${faker.number.int(999)} ${faker.number.int(9999)} items`,
  () => `Order #${faker.number.int(99999)} shipped on ${faker.date.recent().toISOString().slice(0, 10)} for $${faker.commerce.price()}`,
  () => `build ${faker.number.int(9)}.${faker.number.int(9)}.${faker.number.int(9)}.${faker.number.int(9999)}`,
  () => `score +${faker.number.int(99)} (${faker.number.int(100)}%)`,
  () => faker.phone.imei(),
  () => ean13(pick(['400', '401', '412', '440', '500', '501', '300', '350', '370', '690', '695'])),
  () => `lat ${faker.location.latitude({ precision: 6 })} lon ${faker.location.longitude({ precision: 6 })}`,
  () => `pi is ${Math.PI.toFixed(faker.number.int({ min: 8, max: 15 }))}`,
  () => `CAS ${faker.number.int({ min: 50, max: 99999 })}-${digits(2)}-${faker.number.int(9)}`,
  () => `${faker.system.semver()}-${faker.number.int(99)}-g${faker.git.commitSha({ length: 7 })}`,
  () => `1Z${faker.string.alphanumeric({ length: 6, casing: 'upper' })}${digits(10)}`,
  () => faker.date.anytime().toLocaleDateString('de-DE'),
  () => faker.date.anytime().toISOString().slice(0, 10).replace(/-/g, '/'),
  () => `${faker.location.zipCode('#####')}-${digits(4)}`,
  () => `SELECT * FROM orders WHERE id = ${faker.number.int(9999999)} AND total > ${faker.commerce.price()}`,
  () => `10.0.${faker.number.int({ min: 10000, max: 22999 })}.${faker.number.int(9999)}`, // Windows build numbers
  () => `tokens: ${faker.number.int(99999)}, secret: none, password: required`,
  () => `${faker.number.int({ min: 1, max: 999 })}/${faker.number.int({ min: 1, max: 999 })}/${digits(4)}`,
  () => `run ${faker.string.uuid()} finished at ${faker.date.recent().toISOString()} in ${faker.number.float({ min: 0, max: 100, multipleOf: 0.001 })}s`,
];
function ean13(prefix) {
  const d = prefix + digits(12 - prefix.length);
  let s = 0;
  for (let i = 0; i < 12; i++) s += (d.charCodeAt(i) - 48) * (i & 1 ? 3 : 1);
  return d + ((10 - (s % 10)) % 10);
}
for (let i = 0; i < n * 15; i++) neg(pick(negs)());

const text = lines.join('\n') + '\n';
if (out) fs.writeFileSync(out, text);
else process.stdout.write(text);
