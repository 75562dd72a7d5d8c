// The PRD booking flow (HUBSPOT.md, "the booking backend's calls") made with the booking
// backend's own client, the official Node SDK, pointed at a base URL (the gateway).
//
//   node booking_flow.js < job.json
//   job: {"basePath", "accessToken", "trainees": [{"contactId", "examId", "examDate"}]}
//
// Every trainee books at once. Prints one JSON object on stdout:
//   {"sdkVersion", "bookings": [{"index", "outcome", "bookingId", "noteId", "statuses"}]}
// where outcome is "ok" or "<step>: <HTTP status or error>". Nothing is retried by the SDK.
"use strict";

const hubspot = require("@hubspot/api-client");
const sdkVersion = require("@hubspot/api-client/package.json").version;

const MOCK_EXAMS = "2-50158913";
const BOOKINGS = "2-50158943";
const ENROLLMENTS = "2-41701559";
const CONTACTS = "0-1";
const NOTE_TO_CONTACT = 202; // HUBSPOT_DEFINED note -> contact

function eq(values) {
  const filters = Object.entries(values).map(([propertyName, value]) => ({
    propertyName,
    operator: "EQ",
    value,
  }));
  return { filterGroups: [{ filters }], limit: 1 };
}

class StepFailed extends Error {}

async function step(record, name, call) {
  record.step = name;
  try {
    const answer = await call();
    record.statuses.push([name, "ok"]);
    return answer;
  } catch (err) {
    const status = err.code || err.statusCode || err.message;
    record.statuses.push([name, String(status)]);
    throw new StepFailed(`${name}: ${status}`);
  }
}

async function validate(client, t, key, record) {
  const search = client.crm.objects.searchApi;
  const byKey = await step(record, "idempotency_search", () =>
    search.doSearch(BOOKINGS, eq({ idempotency_key: key })),
  );
  if (byKey.total > 0) throw new StepFailed("idempotency_search: already booked");
  const duplicate = eq({ contact_id: t.contactId, exam_date: t.examDate, is_active: "Active" });
  const dup = await step(record, "duplicate_search", () => search.doSearch(BOOKINGS, duplicate));
  if (dup.total > 0) throw new StepFailed("duplicate_search: duplicate");
  const exam = await step(record, "get_exam", () =>
    client.crm.objects.basicApi.getById(MOCK_EXAMS, t.examId, ["capacity", "total_bookings"]),
  );
  const taken = Number(exam.properties.total_bookings || 0);
  if (taken >= Number(exam.properties.capacity || 0)) throw new StepFailed("get_exam: full");
  await step(record, "enrollment_search", () =>
    search.doSearch(ENROLLMENTS, eq({ contact_id: t.contactId, status: "Registered" })),
  );
  const contact = await step(record, "get_contact", () =>
    client.crm.contacts.basicApi.getById(t.contactId, ["credits", "email"]),
  );
  const credits = Number(contact.properties.credits || 0);
  if (credits < 1) throw new StepFailed("get_contact: no credits");
  return { taken, credits };
}

async function write(client, t, key, checked, record) {
  const properties = {
    contact_id: t.contactId,
    exam_date: t.examDate,
    is_active: "Active",
    idempotency_key: key,
    mock_exam_id: t.examId,
  };
  const created = await step(record, "create_booking", () =>
    client.crm.objects.basicApi.create(BOOKINGS, { properties, associations: [] }),
  );
  const bid = created.id;
  record.bookingId = bid;
  const v4 = client.crm.associations.v4.basicApi;
  await step(record, "assoc_contact_booking", () =>
    v4.createDefault(CONTACTS, t.contactId, BOOKINGS, bid),
  );
  await step(record, "assoc_booking_exam", () =>
    v4.createDefault(BOOKINGS, bid, MOCK_EXAMS, t.examId),
  );
  await step(record, "patch_exam_total", () =>
    client.crm.objects.basicApi.update(MOCK_EXAMS, t.examId, {
      properties: { total_bookings: String(checked.taken + 1) },
    }),
  );
  await step(record, "patch_contact_credits", () =>
    client.crm.contacts.basicApi.update(t.contactId, {
      properties: { credits: String(checked.credits - 1) },
    }),
  );
  const note = await step(record, "create_note", () =>
    client.crm.objects.notes.basicApi.create({
      properties: {
        hs_note_body: `Mock exam ${t.examId} on ${t.examDate} booked: booking ${bid}`,
        hs_timestamp: String(Date.now()),
      },
      associations: [
        {
          to: { id: t.contactId },
          types: [{ associationCategory: "HUBSPOT_DEFINED", associationTypeId: NOTE_TO_CONTACT }],
        },
      ],
    }),
  );
  if (!note || !note.id) throw new StepFailed("create_note: no id");
  record.noteId = note.id;
}

async function book(job, t, index) {
  // One client per booking, as each serverless instance of the backend has its own.
  const client = new hubspot.Client({
    accessToken: job.accessToken,
    basePath: job.basePath,
    numberOfApiCallRetries: 0,
  });
  const record = { index, outcome: "pending", bookingId: null, noteId: null, statuses: [] };
  const key = `node-${process.pid}-${index}`;
  try {
    const checked = await validate(client, t, key, record);
    await write(client, t, key, checked, record);
    record.outcome = "ok";
  } catch (err) {
    record.outcome = err instanceof StepFailed ? err.message : `${record.step}: ${err}`;
  }
  delete record.step;
  return record;
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const job = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const bookings = await Promise.all(job.trainees.map((t, i) => book(job, t, i)));
  process.stdout.write(JSON.stringify({ sdkVersion, bookings }) + "\n");
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(2);
});
