// Login page: carries the page the user asked for, and shows why a login failed.
(() => {
  const query = new URLSearchParams(location.search);
  document.getElementById('next').value = query.get('next') || '';
  document.getElementById('failed').hidden = !query.has('failed');
})();
