// An ordinary Express app: no metrics code. The runner (`npm start`) pre-forks 2 gthread workers,
// supervises them and serves every worker's gunicorn_* metrics on one endpoint.
const express = require('express');

const app = express();
app.get('/', (req, res) => res.send(`hello from ${process.pid}\n`));
app.get('/users/:userId', (req, res) => res.json({ id: req.params.userId }));
app.post('/orders', (req, res) => res.status(201).json({ ok: true }));
app.get('/fail', (req, res) => res.status(503).send('unavailable\n'));

module.exports = app;
